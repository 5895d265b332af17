//! Offline detection (`anomalyd detect`, `anomalyd eval labelled`): the
//! daemon's per-entity detector run over a file instead of a Kafka topic.
//!
//! The same code decides as in the daemon: [`EntityTable::admit`] (time
//! order, gaps, stride and phase, window assembly), the model in batches,
//! [`EntityDetector::decide`](crate::detect::EntityDetector::decide)
//! (calibration, range check, alerts) and the same alert and gap messages.
//! A file is read as if it were one partition of a topic: a row's offset is
//! its position among the data rows (0-based), so the alerts' `source` names
//! the row. What does not apply offline: the wall-clock checks (the entity
//! TTL, `input.max_future_s`) and the entity cap; every entity is kept.

pub mod decode;
pub mod input;
pub mod output;

use crate::alert::AlertEvent;
use crate::calibrate::CalibrationState;
use crate::daemon::config::WindowConfig;
use crate::daemon::entities::{Admission, EntityTable};
use crate::daemon::ledger::{LedgerBatch, Partition, SourceOffset};
use crate::daemon::sinks::events::{AlertMessage, GapMessage, SCHEMA_VERSION};
use crate::daemon::source::decode::{RejectReason, Sample};
use crate::detect::{DetectorConfig, PendingWindow};
use crate::series::timestamp::format_timestamp;
use crate::serve::{ModelError, Scorer, WindowScore};
use decode::{Decoded, RowDecoder, Skip};
use input::{InputError, Next, Table};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// What the detector says of a row, once the row is processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The row was skipped (see the row's [`Skip`]).
    Skipped,
    /// The entity has no calibrated score yet: no window, or fewer scored
    /// windows than the calibration's warm-up. It raises no alert.
    WarmingUp,
    /// Calibrated, no alert open.
    Normal,
    /// An alert is open for the entity.
    Alerting,
}

impl Decision {
    /// The name in the output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skipped => "skipped",
            Self::WarmingUp => "warming_up",
            Self::Normal => "normal",
            Self::Alerting => "alerting",
        }
    }
}

/// The window a row completed, as the scores topic reports it.
#[derive(Debug, Clone)]
pub struct WindowReport<'a> {
    /// First and last event time of the window.
    pub start_ms: i64,
    /// See `start_ms`.
    pub end_ms: i64,
    /// The model's score of the whole window (the scores topic's `raw_score`).
    pub raw_score: f64,
    /// The calibrated score in [0, 1] (0 while warming up).
    pub calibrated_score: f64,
    /// The score alert decisions use: calibrated, or 1 on a range breach.
    pub decision_score: f64,
    /// Each channel's share of the raw score, in model order.
    pub contributions: &'a [f32],
    /// An alert opened at this row.
    pub opened: bool,
}

/// One row's result, in input order.
#[derive(Debug, Clone)]
pub struct RowReport<'a> {
    /// 0-based position among the data rows (the alerts' `source.offset`).
    pub row: usize,
    /// 1-based line in the file (row in Parquet).
    pub line: usize,
    /// The entity (what could be read of it on a skipped row).
    pub entity: &'a str,
    /// The time as in the file.
    pub time: &'a str,
    /// Event time, epoch ms (0 on a skipped row whose time could not be read).
    pub timestamp_ms: i64,
    /// Values in model order (empty on a skipped row).
    pub values: &'a [f32],
    /// The label cell, when a label column was named.
    pub label: Option<&'a str>,
    /// Why the row was skipped.
    pub skip: Option<&'a Skip>,
    /// The window the row completed.
    pub window: Option<WindowReport<'a>>,
    /// The entity's state after this row.
    pub decision: Decision,
}

/// Why an offline run stopped.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The input could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The model failed on a batch.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The results could not be written.
    #[error("cannot write the results: {0}")]
    Output(#[from] std::io::Error),
}

/// Where the results go.
pub trait Results {
    /// One row, in input order.
    fn row(&mut self, report: &RowReport<'_>) -> std::io::Result<()>;
    /// One alert or gap event, as the daemon produces it to the alerts topic.
    fn event(&mut self, json: &str) -> std::io::Result<()>;
}

/// Counts of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Data rows read (including skipped ones).
    pub rows: usize,
    /// Rows skipped, by reason.
    pub skipped: BTreeMap<&'static str, usize>,
    /// The first skipped rows: `row N (line L): message`.
    pub first_skips: Vec<String>,
    /// Windows scored.
    pub windows: usize,
    /// Entities seen.
    pub entities: usize,
    /// Entities that never finished warming up (too few windows to calibrate).
    pub never_calibrated: Vec<String>,
    /// Alert events by kind (`opened`, `updated`, `resolved`, `gap`).
    pub events: BTreeMap<&'static str, usize>,
}

impl Summary {
    /// Rows skipped in all.
    pub fn skipped_rows(&self) -> usize {
        self.skipped.values().sum()
    }
}

/// How many skipped rows are quoted in the summary.
const QUOTED_SKIPS: usize = 10;

/// Offline settings besides the detector's.
#[derive(Debug, Clone)]
pub struct DetectSettings {
    /// The detector (`[detector]` of the daemon's config).
    pub detector: DetectorConfig,
    /// Windows (`[windows]`): stride, stagger, gaps.
    pub windows: WindowConfig,
    /// The topic name the alerts' `source` gives.
    pub source_topic: String,
    /// Windows per model call.
    pub batch: usize,
}

/// A row waiting for its window's score.
struct Pending {
    row: usize,
    line: usize,
    decoded: Decoded,
    skip: Option<Skip>,
    window: Option<PendingWindow>,
    source: SourceOffset,
}

/// The daemon's detector over the rows of one table.
pub struct Detection<'a> {
    scorer: &'a Scorer,
    settings: DetectSettings,
    entities: EntityTable,
    partition: Partition,
    pending: Vec<Pending>,
    windows_pending: usize,
    ledger: LedgerBatch,
    started: Instant,
    summary: Summary,
    /// Spare buffers of decoded rows, reused.
    spare: Vec<Decoded>,
}

impl<'a> Detection<'a> {
    /// A detection with `scorer`'s model and `settings`.
    pub fn new(scorer: &'a Scorer, settings: DetectSettings) -> Self {
        let entities = EntityTable::new(
            settings.windows.clone(),
            settings.detector.clone(),
            scorer.metadata().window_len,
            false,
        );
        let partition = Partition {
            topic: Arc::from(settings.source_topic.as_str()),
            partition: 0,
        };
        Self {
            scorer,
            settings,
            entities,
            partition,
            pending: Vec::new(),
            windows_pending: 0,
            ledger: LedgerBatch::detached(),
            started: Instant::now(),
            summary: Summary::default(),
            spare: Vec::new(),
        }
    }

    /// Runs every row of `table` through the detector; `progress` is told
    /// the bytes read.
    pub fn run(
        mut self,
        table: &mut Table,
        decoder: &mut RowDecoder,
        results: &mut dyn Results,
        progress: &indicatif::ProgressBar,
    ) -> Result<Summary, OfflineError> {
        let mut row = 0usize;
        loop {
            let mut decoded = self.spare.pop().unwrap_or_default();
            let outcome = match table.next_row()? {
                Next::End => break,
                Next::Unreadable(message) => Err(Skip {
                    reason: RejectReason::BadJson,
                    column: None,
                    detail: format!("unreadable row: {message}"),
                }),
                Next::Row(cells) => decoder.decode(&cells, &mut decoded),
            };
            let line = table.line();
            self.take(row, line, decoded, outcome.err(), results)?;
            row += 1;
            if row.is_multiple_of(4096) {
                progress.set_position(table.position());
            }
        }
        self.flush(results)?;
        progress.set_position(table.position());
        self.summary.rows = row;
        self.summary.entities = self.entities.len();
        self.summary.never_calibrated = self.entities.warming_names();
        self.summary.never_calibrated.sort();
        Ok(self.summary)
    }

    /// Takes one row: admission (order, gap, window), then batching.
    fn take(
        &mut self,
        row: usize,
        line: usize,
        decoded: Decoded,
        skip: Option<Skip>,
        results: &mut dyn Results,
    ) -> Result<(), OfflineError> {
        let source = SourceOffset {
            partition: self.partition.clone(),
            offset: row as i64,
        };
        let mut pending = Pending {
            row,
            line,
            decoded,
            skip,
            window: None,
            source,
        };
        if pending.skip.is_none() {
            self.admit(&mut pending, results)?;
        }
        self.count_skip(&pending);
        self.pending.push(pending);
        if self.windows_pending >= self.settings.batch {
            self.flush(results)?;
        }
        Ok(())
    }

    /// Admits a row not skipped yet (order, gap, window), as the daemon
    /// does: a row out of order becomes a skip; a gap flushes and reports
    /// its event.
    fn admit(
        &mut self,
        pending: &mut Pending,
        results: &mut dyn Results,
    ) -> Result<(), OfflineError> {
        let sample = Sample {
            entity: pending.decoded.entity.as_str().into(),
            timestamp_ms: pending.decoded.timestamp_ms,
            values: pending.decoded.values.as_slice().into(),
        };
        let admission = self.entities.admit(
            self.scorer,
            &sample,
            &pending.source,
            self.started,
            &mut self.ledger,
        );
        self.ledger.clear();
        match admission {
            Admission::OutOfOrder { latest_ms } => {
                pending.skip = Some(Skip {
                    reason: RejectReason::OutOfOrder,
                    column: None,
                    detail: format!(
                        "event time {} is not after the entity's latest, {}",
                        format_timestamp(pending.decoded.timestamp_ms),
                        format_timestamp(latest_ms)
                    ),
                });
            }
            Admission::AlreadyCheckpointed => unreachable!("nothing is restored offline"),
            Admission::Accepted { window, gap } => {
                if let Some((previous_ms, gap_ms)) = gap {
                    // The daemon sends a gap event when the row is admitted.
                    self.flush(results)?;
                    let message = GapMessage {
                        schema_version: SCHEMA_VERSION,
                        event: "gap",
                        entity: &pending.decoded.entity,
                        previous_ts: format_timestamp(previous_ms),
                        ts: format_timestamp(pending.decoded.timestamp_ms),
                        gap_ms,
                        max_gap_ms: self.settings.windows.max_gap_ms,
                        source: (&pending.source).into(),
                    };
                    results
                        .event(&serde_json::to_string(&message).map_err(std::io::Error::from)?)?;
                    *self.summary.events.entry("gap").or_default() += 1;
                }
                if window.is_some() {
                    self.windows_pending += 1;
                }
                pending.window = window;
            }
        }
        Ok(())
    }

    /// Counts a skipped row, and quotes the first few.
    fn count_skip(&mut self, pending: &Pending) {
        if let Some(skip) = &pending.skip {
            *self
                .summary
                .skipped
                .entry(skip.reason.as_str())
                .or_default() += 1;
            if self.summary.first_skips.len() < QUOTED_SKIPS {
                self.summary.first_skips.push(format!(
                    "row {} (line {}): {skip}",
                    pending.row, pending.line
                ));
            }
        }
    }

    /// Decides a pending row (its window's score, if it completed one),
    /// reports its alert event, and says where its entity stands.
    fn decide<'s>(
        &mut self,
        pending: &Pending,
        scored: Option<(&PendingWindow, &'s WindowScore)>,
        results: &mut dyn Results,
    ) -> Result<(Decision, Option<WindowReport<'s>>), OfflineError> {
        if pending.skip.is_some() {
            return Ok((Decision::Skipped, None));
        }
        let Some(state) = self.entities.get_mut(&pending.decoded.entity) else {
            unreachable!("an admitted row's entity is held")
        };
        let mut report = None;
        if let Some((window, scored)) = scored {
            let outcome = state.detector.decide(self.scorer, window, scored);
            let calibrated = outcome.calibrated.expect("a scored window is calibrated");
            if let Some(event) = &outcome.event {
                let message = AlertMessage::new(
                    event,
                    (window.window.start_ms, window.window.end_ms),
                    scored.score as f64,
                    outcome.score,
                    self.settings.detector.alerts.threshold,
                    &pending.source,
                );
                results.event(&serde_json::to_string(&message).map_err(std::io::Error::from)?)?;
                *self
                    .summary
                    .events
                    .entry(crate::daemon::sinks::events::event_name(event))
                    .or_default() += 1;
            }
            report = Some(WindowReport {
                start_ms: window.window.start_ms,
                end_ms: window.window.end_ms,
                raw_score: scored.score as f64,
                calibrated_score: calibrated.score,
                decision_score: outcome.score,
                contributions: &scored.channel_contributions,
                opened: matches!(outcome.event, Some(AlertEvent::Opened(_))),
            });
        }
        let decision = if state.detector.alerts().current().is_some() {
            Decision::Alerting
        } else if state.detector.calibration_state() == CalibrationState::Ready {
            Decision::Normal
        } else {
            Decision::WarmingUp
        };
        Ok((decision, report))
    }

    /// Scores the pending windows in one batch, then decides and reports
    /// the pending rows in input order.
    fn flush(&mut self, results: &mut dyn Results) -> Result<(), OfflineError> {
        let scores = if self.windows_pending == 0 {
            Vec::new()
        } else {
            self.scorer.score_normalised_windows(
                self.pending
                    .iter()
                    .filter_map(|p| p.window.as_ref().map(|w| &w.window)),
            )?
        };
        self.summary.windows += scores.len();
        let mut scores = scores.into_iter();
        for pending in std::mem::take(&mut self.pending) {
            let scored = pending
                .window
                .as_ref()
                .map(|w| (w, scores.next().expect("one score per pending window")));
            let (decision, window) =
                self.decide(&pending, scored.as_ref().map(|(w, s)| (*w, s)), results)?;
            results.row(&RowReport {
                row: pending.row,
                line: pending.line,
                entity: &pending.decoded.entity,
                time: &pending.decoded.time,
                timestamp_ms: pending.decoded.timestamp_ms,
                values: if pending.skip.is_some() {
                    &[]
                } else {
                    &pending.decoded.values
                },
                label: pending.decoded.label.as_deref(),
                skip: pending.skip.as_ref(),
                window,
                decision,
            })?;
            self.spare.push(pending.decoded);
        }
        self.windows_pending = 0;
        Ok(())
    }
}
