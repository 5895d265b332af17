//! The scorer thread: owns every entity's state, micro-batches the windows
//! of many entities into one model call (up to `scoring.max_batch`, scored
//! once nothing more is queued or after `scoring.max_wait_ms`), then calibrates, decides alerts and hands the
//! outputs to the producer. It runs on its own OS thread, so the model never
//! blocks the async runtime and the consumer keeps reading while it works.
//! It also takes the entity checkpoints (`state.checkpoint_interval_ms`, and
//! before partitions are handed back or the daemon stops) and sends each
//! once every output sent before it is acknowledged ([`crate::daemon::state`]).

use super::entities::{Admission, EntityTable, StateWrite};
use super::ledger::{abandon_all, Hold, LedgerBatch, Partition};
use super::throttle::Throttle;
use crate::daemon::admin::health::Health;
use crate::daemon::admin::metrics::Metrics;
use crate::daemon::config::{ModelThreads, ScoringConfig};
use crate::daemon::sinks::Sink;
use crate::daemon::source::decode::{Decoder, Sample};
use crate::daemon::state::Checkpoint;
use crate::detect::PendingWindow;
use crate::serve::Scorer;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod checkpoints;
mod model_threads;
mod outputs;
mod samples;
mod settings;

use model_threads::score_in_parts;
use samples::OriginalRecord;
pub use samples::SampleBatch;
pub use settings::{CheckpointSettings, OutputTopics, ScoringSettings};

/// What the consumer (and the reloader) send the scorer, in order.
pub enum Work {
    /// Decoded samples in the order they were read; their source offsets
    /// are held by the consumer.
    Samples(SampleBatch),
    /// Serve this model from the next batch on (same channels and window length).
    UseModel(Arc<Scorer>),
    /// Checkpoints of newly assigned partitions, before any of their samples.
    Restore(Vec<Checkpoint>),
    /// Finish everything queued, checkpoint the entities of these partitions
    /// (sent by the deadline if their turn comes, else discarded), drop
    /// them, then answer with the holds of the dropped state (released by
    /// the consumer after the partitions' final commit).
    Revoke(Vec<Partition>, Instant, Sender<Vec<Hold>>),
    /// Finish everything queued and checkpoint every entity, then answer (shutdown).
    Drain(Instant, Sender<()>),
}

/// Where and how often checkpoints are written.
struct CheckpointSchedule {
    topic: String,
    /// `kafka.group_id`, written beside each checkpoint.
    group: String,
    every: Duration,
    next: Instant,
}

/// A window waiting for its batch.
struct Queued {
    entity: smol_str::SmolStr,
    pending: PendingWindow,
    /// The hold of the sample that completed the window.
    source: Hold,
    record_time_ms: Option<i64>,
}

/// The scorer thread's state.
pub struct ScoringWorker {
    scorer: Arc<Scorer>,
    /// The model threads (`scoring.threads` > 1); `None` runs the model here.
    model_threads: Option<rayon::ThreadPool>,
    entities: EntityTable,
    batch: Vec<Queued>,
    batch_deadline: Option<Instant>,
    ledger_ops: LedgerBatch,
    sink: Arc<Sink>,
    metrics: Metrics,
    health: Arc<Health>,
    max_batch: usize,
    max_wait: Duration,
    alerts_topic: String,
    scores_topic: Option<String>,
    dead_letter_topic: String,
    /// The input's record format, to write a sample back as a record.
    decoder: Decoder,
    threshold: f64,
    max_gap_ms: u64,
    checkpoints: Option<CheckpointSchedule>,
    /// Checkpoints taken, by epoch, waiting for the outputs before them.
    staged: VecDeque<(u64, Vec<StateWrite>)>,
    /// Replayed samples skipped because a restored checkpoint holds them.
    skipped: Throttle,
    /// When idle entities are next evicted and the entity gauges set.
    next_housekeeping: Instant,
}

/// How often idle entities are evicted and the entity gauges are set.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// The model threads for `scoring.threads` (`None` for one: the scorer
/// thread runs the model itself, as it does when they cannot start).
fn model_threads(scoring: &ScoringConfig) -> Option<rayon::ThreadPool> {
    let cores = ModelThreads::available_cores();
    let threads = scoring.threads.resolve(scoring.max_batch, cores);
    let auto = scoring.threads == ModelThreads::Auto;
    tracing::info!(threads, auto, available_cores = cores, "model threads");
    (threads > 1)
        .then(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|index| format!("anomalyd-model-{index}"))
                .build()
        })
        .transpose()
        .unwrap_or_else(|error| {
            tracing::warn!(%error, threads, "cannot start the model threads; the scorer thread runs the model alone");
            None
        })
}

impl ScoringWorker {
    /// A worker built from `settings`, serving `scorer`.
    pub fn new(
        settings: ScoringSettings,
        scorer: Arc<Scorer>,
        sink: Arc<Sink>,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Self {
        let ScoringSettings {
            scoring,
            windows,
            detector,
            input,
            topics,
            checkpoints,
        } = settings;
        let decoder = Decoder::new(&input, 0, &scorer.metadata().channels);
        let window_len = scorer.metadata().window_len;
        let checkpoints = checkpoints.map(|c| CheckpointSchedule {
            next: Instant::now() + c.every,
            topic: c.topic,
            group: c.group,
            every: c.every,
        });
        Self {
            model_threads: model_threads(&scoring),
            threshold: detector.alerts.threshold,
            max_gap_ms: windows.max_gap_ms,
            entities: EntityTable::new(windows, detector, window_len, checkpoints.is_some()),
            checkpoints,
            staged: VecDeque::new(),
            skipped: Throttle::new(Duration::from_secs(10)),
            next_housekeeping: Instant::now() + HOUSEKEEPING_EVERY,
            scorer,
            batch: Vec::with_capacity(scoring.max_batch),
            batch_deadline: None,
            ledger_ops: sink.ledger().batch(),
            sink,
            metrics,
            health,
            max_batch: scoring.max_batch,
            max_wait: Duration::from_millis(scoring.max_wait_ms),
            alerts_topic: topics.alerts,
            scores_topic: topics.scores,
            dead_letter_topic: topics.dead_letter,
            decoder,
        }
    }

    /// Runs until the work channel closes.
    pub fn run(mut self, work: Receiver<Work>) {
        loop {
            self.health.scorer_beat();
            let now = Instant::now();
            let mut wake = self
                .batch_deadline
                .unwrap_or(self.next_housekeeping)
                .min(self.next_housekeeping);
            if let Some(schedule) = &self.checkpoints {
                wake = wake.min(schedule.next);
            }
            if !self.staged.is_empty() {
                // Staged checkpoints go out as soon as the outputs before them are acknowledged.
                wake = wake.min(now + Duration::from_millis(5));
            }
            match work.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(item) => self.handle(item),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    self.apply_ledger();
                    // The daemon is stopping: what the entities hold is
                    // given up, and read again at the next start.
                    self.sink.ledger().close();
                    return;
                }
            }
            self.tend(work.is_empty());
        }
    }

    /// What follows each piece of work (or a wake-up): scores the batch
    /// once nothing more is queued (`idle`) or its wait is over, applies
    /// the ledger, does what is due (housekeeping, a checkpoint), takes
    /// back failed checkpoints and sends those whose outputs are settled.
    pub(crate) fn tend(&mut self, idle: bool) {
        // Nothing more queued: score now rather than wait for windows
        // that are not coming yet. Under load the queue is rarely empty
        // and batches fill to `max_batch`; when it is light, a window
        // waits for no one.
        if self
            .batch_deadline
            .is_some_and(|deadline| idle || Instant::now() >= deadline)
        {
            self.flush();
        }
        if idle || self.ledger_ops.len() > 4096 {
            self.apply_ledger();
        }
        if Instant::now() >= self.next_housekeeping {
            self.housekeeping();
            self.next_housekeeping = Instant::now() + HOUSEKEEPING_EVERY;
        }
        if self
            .checkpoints
            .as_ref()
            .is_some_and(|s| Instant::now() >= s.next)
        {
            self.checkpoint(None);
            if let Some(schedule) = &mut self.checkpoints {
                schedule.next = Instant::now() + schedule.every;
            }
        }
        self.take_back_failed_checkpoints();
        self.send_settled_checkpoints();
    }

    /// Does one piece of work.
    pub(crate) fn handle(&mut self, item: Work) {
        match item {
            Work::Samples(batch) => {
                let SampleBatch { samples, records } = batch;
                for incoming in samples {
                    let original = OriginalRecord {
                        key: incoming.key.map(|range| &records[range]),
                        payload: &records[incoming.payload],
                        of_many: incoming.of_many,
                    };
                    self.admit(
                        incoming.sample,
                        incoming.source,
                        incoming.record_time_ms,
                        original,
                    );
                }
            }
            Work::UseModel(scorer) => {
                self.flush();
                self.entities.use_model(&self.scorer, &scorer);
                tracing::info!(
                    model_version = scorer.model_version(),
                    "serving the reloaded model"
                );
                self.scorer = scorer;
            }
            Work::Restore(checkpoints) => {
                let counts = self
                    .entities
                    .restore(checkpoints, &self.scorer, Instant::now());
                self.metrics
                    .state_restored
                    .with_label_values(&["restored"])
                    .inc_by(counts.restored as u64);
                self.metrics
                    .state_restored
                    .with_label_values(&["refused"])
                    .inc_by(counts.refused as u64);
                self.metrics.entities_active.set(self.entities.len() as i64);
            }
            Work::Revoke(partitions, deadline, done) => {
                self.checkpoint(Some(&partitions));
                let mut holds = Vec::new();
                if !self.send_checkpoints_by(deadline) {
                    tracing::warn!("checkpoints of revoked partitions were not sent in time; they are discarded, and the next owner restores older ones and replays more");
                    holds = self.discard_staged(&partitions);
                }
                let dropped = self.entities.drop_partitions(&partitions, &mut holds);
                tracing::info!(
                    partitions = partitions.len(),
                    entities = dropped,
                    "dropped the state of revoked partitions"
                );
                self.metrics.entities_active.set(self.entities.len() as i64);
                // Holds on partitions kept (an entity whose samples came from
                // several) are released now; the revoked ones' after their commit.
                let (revoked, kept): (Vec<Hold>, Vec<Hold>) = holds
                    .into_iter()
                    .partition(|hold| partitions.contains(&hold.source().partition));
                self.ledger_ops.release_all(kept);
                self.apply_ledger();
                if let Err(unanswered) = done.send(revoked) {
                    // The consumer stopped waiting and forgot the partitions
                    // with all their holds.
                    abandon_all(unanswered.into_inner());
                }
            }
            Work::Drain(deadline, done) => {
                self.checkpoint(None);
                if !self.send_checkpoints_by(deadline) {
                    tracing::warn!("the final checkpoints were not sent in time; the next start restores older ones and replays more");
                }
                let _ = done.send(());
            }
        }
    }

    fn admit(
        &mut self,
        sample: Sample,
        source: Hold,
        record_time_ms: Option<i64>,
        original: OriginalRecord<'_>,
    ) {
        let now = Instant::now();
        if self.entities.would_exceed_cap(&sample.entity) {
            // Windows in the batch belong to entities that may be evicted: score them first.
            self.flush();
            let mut tombstones = Vec::new();
            let evicted = self
                .entities
                .evict(now, 1, &mut self.ledger_ops, &mut tombstones);
            self.count_evictions(evicted);
            self.apply_ledger();
            self.stage(tombstones);
        }
        match self.entities.admit(
            &self.scorer,
            &sample,
            source.source(),
            now,
            &mut self.ledger_ops,
        ) {
            Admission::OutOfOrder { latest_ms } => {
                self.set_aside_out_of_order(&sample, source, latest_ms, original)
            }
            Admission::AlreadyCheckpointed => {
                self.metrics.samples_already_checkpointed.inc();
                if let Some(count) = self.skipped.count(1, Instant::now()) {
                    tracing::warn!(
                        records = count,
                        partition = %format_args!("{}/{}", source.source().partition.topic, source.source().partition.partition),
                        through_offset = source.source().offset,
                        "skipped replayed records that restored checkpoints already hold (their outputs were sent before); counted in anomalyd_samples_already_checkpointed_total"
                    );
                }
                self.ledger_ops.release(source);
            }
            Admission::Accepted { window, gap } => {
                if let Some((previous_ms, gap_ms)) = gap {
                    self.send_gap(&sample, &source, record_time_ms, previous_ms, gap_ms);
                }
                match window {
                    Some(pending) => {
                        // The sample's processing hold passes to the queued window.
                        if self.batch.is_empty() {
                            self.batch_deadline = Some(now + self.max_wait);
                        }
                        self.batch.push(Queued {
                            entity: sample.entity,
                            pending,
                            source,
                            record_time_ms,
                        });
                        if self.batch.len() >= self.max_batch {
                            self.flush();
                        }
                    }
                    None => self.ledger_ops.release(source),
                }
            }
        }
    }

    /// Scores the queued windows in one model call and emits their outputs.
    fn flush(&mut self) {
        self.batch_deadline = None;
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let started = Instant::now();
        let scores = match score_in_parts(
            &self.scorer,
            self.model_threads.as_ref(),
            &batch,
            |queued| &queued.pending.window,
        ) {
            Ok(scores) => scores,
            Err(error) => {
                // Their offsets stay held: nothing past them is committed, and
                // a restart scores them again.
                tracing::error!(%error, windows = batch.len(), "the model failed on a batch; its offsets stay uncommitted");
                abandon_all(batch.into_iter().map(|queued| queued.source));
                return;
            }
        };
        self.metrics
            .model_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.model_batch_size.observe(batch.len() as f64);
        self.metrics.windows_scored.inc_by(batch.len() as u64);
        let mut outputs = Vec::new();
        for (queued, scored) in batch.into_iter().zip(&scores) {
            let Some(state) = self.entities.get_mut(&queued.entity) else {
                self.ledger_ops.release(queued.source);
                continue;
            };
            let outcome = state.detector.decide(&self.scorer, &queued.pending, scored);
            let calibrated = outcome.calibrated.expect("a scored window is calibrated");
            self.metrics.calibrated_score.observe(calibrated.score);
            outputs.extend(self.score_output(&queued, scored, &outcome, &calibrated));
            if let Some(event) = &outcome.event {
                outputs.push(self.alert_output(&queued, scored, &outcome, event));
            }
            // Each output holds the record in its place.
            self.ledger_ops.release(queued.source);
        }
        self.apply_ledger();
        for output in outputs {
            self.sink.send(Box::new(output));
        }
    }

    fn apply_ledger(&mut self) {
        self.sink.ledger().apply(&mut self.ledger_ops);
    }

    fn housekeeping(&mut self) {
        if self.batch.is_empty() {
            let mut tombstones = Vec::new();
            let evicted =
                self.entities
                    .evict(Instant::now(), 0, &mut self.ledger_ops, &mut tombstones);
            self.count_evictions(evicted);
            self.apply_ledger();
            self.stage(tombstones);
        }
        self.metrics.entities_active.set(self.entities.len() as i64);
        self.metrics
            .entities_warming
            .set(self.entities.warming() as i64);
    }

    fn count_evictions(&self, evicted: super::entities::Evicted) {
        if evicted.ttl > 0 {
            self.metrics
                .entities_evicted
                .with_label_values(&["ttl"])
                .inc_by(evicted.ttl as u64);
        }
        if evicted.cap > 0 {
            self.metrics
                .entities_evicted
                .with_label_values(&["cap"])
                .inc_by(evicted.cap as u64);
            tracing::warn!(
                evicted = evicted.cap,
                "entity cap reached: evicted the least recently seen entities"
            );
        }
    }
}
