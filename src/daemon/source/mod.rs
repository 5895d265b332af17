//! The consumer thread: reads the input topics in the consumer group,
//! decodes each record, sends samples to the scorer and malformed records to
//! the dead-letter topic, and commits the ledger's safe positions.
//!
//! Rebalance: before partitions are revoked, everything queued for them is
//! scored, their entities are checkpointed, the producer is flushed and
//! their safe positions are committed; then their entity state is dropped.
//! When partitions are assigned, their checkpoints are read back before any
//! of their records, so the new owner carries on where the last one stopped
//! (ARCHITECTURE.md, "Delivery").

pub mod decode;
mod intake;
mod polling;

pub use intake::{Intake, Taken};
pub use polling::ConsumerLoop;

use super::failure::{classify_error, report_client_error, ErrorClass, Fatal, FatalKind, Stop};
use super::ledger::{Ledger, Partition};
use super::throttle::Throttle;
use crate::daemon::admin::health::{any_broker_up, Health, KafkaClient};
use crate::daemon::admin::metrics::Metrics;
use crate::daemon::scoring::{SampleBatch, Work};
use crate::daemon::sinks::Sink;
use crate::daemon::state;
use crossbeam_channel::{SendTimeoutError, Sender};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, ClientContext};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Commits `list` without waiting; the outcome arrives as an offset-commit
/// event on the consumer queue, which `poll` hands to
/// [`ConsumerContext::commit_callback`].
///
/// rdkafka 0.39's `commit(…, CommitMode::Async)` gives librdkafka no reply
/// queue, so that callback never runs (fede1024/rust-rdkafka#856): the
/// commit counts and confirmed positions would stay empty. This passes the
/// consumer queue, as the proposed fix (#857) does.
#[allow(unsafe_code)] // librdkafka's C API, the one call rdkafka does not wrap right.
fn commit_async(consumer: &BaseConsumer<ConsumerEvents>, list: &TopicPartitionList) {
    use rdkafka::bindings as rd;
    let client = consumer.client().native_ptr();
    // SAFETY: `client` is the live handle `consumer` owns; the queue handle is
    // a new reference to its consumer queue, destroyed after the call, which
    // takes its own reference for the reply; `list` is copied by librdkafka.
    let error = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(client);
        let error =
            rd::rd_kafka_commit_queue(client, list.ptr(), queue, None, std::ptr::null_mut());
        if !queue.is_null() {
            rd::rd_kafka_queue_destroy(queue);
        }
        error
    };
    if error != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        let error = KafkaError::ConsumerCommit(error.into());
        consumer.context().record_commit(Err(error), list);
    }
}

/// Where assigned partitions' checkpoints are read from.
pub struct RestoreSettings {
    /// The reader's client settings ([`state::restore_config`]).
    pub client: ClientConfig,
    /// The state topic.
    pub topic: String,
    /// `kafka.group_id`: checkpoints of other groups are not restored.
    pub group: String,
    /// `state.restore_timeout_s`.
    pub timeout: Duration,
}

/// Consumer callbacks: statistics (lag, broker state) and rebalances.
pub struct ConsumerEvents {
    work: Sender<Work>,
    sink: Arc<Sink>,
    ledger: Ledger,
    metrics: Metrics,
    health: Arc<Health>,
    grace: Duration,
    restore: Option<RestoreSettings>,
    assigned: Mutex<BTreeSet<Partition>>,
    committed: Mutex<HashMap<Partition, i64>>,
    /// The daemon's stop: a fatal error here begins it.
    stop: Arc<Stop>,
    /// Repeated client errors and failed commits, logged at most every 10 s.
    client_errors: Throttle,
    /// Samples decoded but not yet sent to the scorer. Sent when
    /// `SAMPLES_PER_SEND` are in, when the consumer has nothing more to read
    /// at once, and before anything else goes to the scorer (revoke, restore,
    /// drain), so the scorer sees everything in order.
    unsent: Mutex<SampleBatch>,
    samples_per_send: usize,
}

/// Most samples sent to the scorer in one message: few enough that a
/// batch is quickly scored, many enough that the channel's cost (a lock and
/// often a wake-up) is shared.
const SAMPLES_PER_SEND: usize = 256;

/// The work channel's capacity, in messages, for at most `queue_capacity`
/// samples queued (`scoring.queue_capacity`), and the samples per message.
pub fn work_queue_shape(queue_capacity: usize) -> (usize, usize) {
    let per_send = SAMPLES_PER_SEND.min(queue_capacity).max(1);
    ((queue_capacity / per_send).max(1), per_send)
}

impl ConsumerEvents {
    /// Callbacks that hand revoked partitions back within `grace` and, with
    /// `restore`, read assigned partitions' checkpoints.
    pub fn new(
        work: Sender<Work>,
        sink: Arc<Sink>,
        metrics: Metrics,
        health: Arc<Health>,
        grace: Duration,
        restore: Option<RestoreSettings>,
        samples_per_send: usize,
    ) -> Self {
        Self {
            work,
            ledger: sink.ledger().clone(),
            stop: sink.stop().clone(),
            client_errors: Throttle::new(Duration::from_secs(10)),
            sink,
            metrics,
            health,
            grace,
            restore,
            assigned: Mutex::new(BTreeSet::new()),
            committed: Mutex::new(HashMap::new()),
            unsent: Mutex::new(SampleBatch::default()),
            samples_per_send,
        }
    }

    /// Queues a decoded sample for the scorer; sends the batch once full,
    /// waiting for the scorer while `keep_waiting` says so.
    fn queue_samples(
        &self,
        taken: Taken,
        message: &BorrowedMessage<'_>,
        keep_waiting: impl Fn() -> bool,
    ) {
        let full = {
            let mut unsent = self.unsent.lock().unwrap_or_else(|e| e.into_inner());
            unsent.push(
                taken,
                message.timestamp().to_millis(),
                message.key(),
                message.payload().unwrap_or_default(),
            );
            unsent.len() >= self.samples_per_send
        };
        if full {
            self.send_samples(keep_waiting);
        }
    }

    /// Sends the queued samples to the scorer. Back-pressure: waits for room
    /// while `keep_waiting` says so, staying visibly alive. Samples not sent
    /// keep their offsets held, so they are read again at the next start.
    fn send_samples(&self, keep_waiting: impl Fn() -> bool) -> bool {
        let batch = {
            let mut unsent = self.unsent.lock().unwrap_or_else(|e| e.into_inner());
            if unsent.is_empty() {
                return true;
            }
            unsent.take()
        };
        let mut item = Work::Samples(batch);
        loop {
            match self.work.send_timeout(item, Duration::from_millis(100)) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(back)) => {
                    item = back;
                    self.health.consumer_beat();
                    if !keep_waiting() {
                        return false;
                    }
                }
                Err(SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }

    /// Reads the checkpoints of `partitions` and queues them for the scorer
    /// ahead of any of their records. A failure stops the daemon: scoring
    /// without the state would miss the windows its buffers held.
    fn restore(&self, partitions: &[Partition]) {
        let Some(settings) = &self.restore else {
            return;
        };
        let started = Instant::now();
        match state::read(
            &settings.client,
            &settings.topic,
            &settings.group,
            partitions,
            settings.timeout,
        ) {
            Ok(restored) => {
                self.metrics
                    .state_restored
                    .with_label_values(&["unreadable"])
                    .inc_by(restored.unreadable as u64);
                self.metrics
                    .state_restored
                    .with_label_values(&["other_group"])
                    .inc_by(restored.other_group as u64);
                if restored.other_group > 0 {
                    tracing::warn!(
                        state_topic = %settings.topic,
                        records = restored.other_group,
                        "the state topic holds checkpoints of other consumer groups; they are not restored (give each group its own state.topic)"
                    );
                }
                tracing::info!(
                    entities = restored.checkpoints.len(),
                    records = restored.records,
                    unreadable = restored.unreadable,
                    ms = started.elapsed().as_millis() as u64,
                    "entity state restored"
                );
                if !restored.checkpoints.is_empty() {
                    self.send_samples(|| true);
                    let _ = self.work.send(Work::Restore(restored.checkpoints));
                }
            }
            Err(error) => {
                let kind = match &error {
                    state::RestoreError::Kafka { source, .. } => match classify_error(source) {
                        ErrorClass::Fatal(kind) => kind,
                        _ => FatalKind::Topic,
                    },
                    _ => FatalKind::Topic,
                };
                self.stop.fail(Fatal::new(
                    kind,
                    format!("cannot restore the entity state of assigned partitions: {error}"),
                ));
            }
        }
    }

    fn has_unsent_samples(&self) -> bool {
        !self
            .unsent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn assigned(&self) -> Vec<Partition> {
        self.assigned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Commits the safe position of each of `partitions` (with `force`, even
    /// where it equals the last confirmed commit). The outcome arrives in
    /// [`ConsumerContext::commit_callback`], which counts it and records what
    /// the broker confirmed.
    fn commit(
        &self,
        consumer: &BaseConsumer<Self>,
        partitions: &[Partition],
        mode: CommitMode,
        force: bool,
    ) {
        let mut list = TopicPartitionList::new();
        {
            let confirmed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            for partition in partitions {
                let Some(position) = self.ledger.position(partition) else {
                    continue;
                };
                if !force && confirmed.get(partition) == Some(&position) {
                    continue;
                }
                let _ = list.add_partition_offset(
                    &partition.topic,
                    partition.partition,
                    Offset::Offset(position),
                );
            }
        }
        if list.count() == 0 {
            return;
        }
        match mode {
            CommitMode::Sync => self.record_commit(consumer.commit(&list, mode), &list),
            CommitMode::Async => commit_async(consumer, &list),
        }
    }

    /// Counts a commit's outcome and records the positions the broker confirmed.
    fn record_commit(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                self.metrics.commits.with_label_values(&["ok"]).inc();
                let mut confirmed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
                for element in offsets.elements() {
                    if let Offset::Offset(position) = element.offset() {
                        tracing::debug!(
                            topic = element.topic(),
                            partition = element.partition(),
                            position,
                            "committed"
                        );
                        confirmed.insert(
                            Partition {
                                topic: element.topic().into(),
                                partition: element.partition(),
                            },
                            position,
                        );
                    }
                }
            }
            Err(error) => {
                self.metrics.commits.with_label_values(&["error"]).inc();
                if let Some(count) = self.client_errors.count(1, Instant::now()) {
                    tracing::warn!(%error, failures = count, "offset commits failed; retried at the next interval");
                }
            }
        }
    }

    /// Finishes the work of `partitions`, commits them and forgets them.
    fn hand_back(&self, consumer: &BaseConsumer<Self>, partitions: &[Partition]) {
        if partitions.is_empty() {
            return;
        }
        let mut deadline = Instant::now() + self.grace;
        if let Some(stop) = self.stop.drain_deadline() {
            deadline = deadline.min(stop);
        }
        let (done, finished) = crossbeam_channel::bounded(1);
        let mut dropped = None;
        let drained = self.send_samples(|| Instant::now() < deadline)
            && self
                .work
                .send_deadline(Work::Revoke(partitions.to_vec(), deadline, done), deadline)
                .is_ok()
            && finished
                .recv_deadline(deadline)
                .map(|holds| dropped = Some(holds))
                .is_ok();
        let flushed = self.sink.flush(deadline);
        if !(drained && flushed) {
            tracing::warn!(drained, flushed, "revoked partitions were not finished within the grace period; their unfinished records will be read again by the next owner");
        }
        self.commit(consumer, partitions, CommitMode::Sync, true);
        match dropped {
            Some(holds) => self.ledger.forget(partitions, holds),
            // The scorer has not dropped the state yet: all its holds go.
            None => partitions.iter().for_each(|p| self.ledger.forget_all(p)),
        }
        let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        for partition in partitions {
            assigned.remove(partition);
            committed.remove(partition);
            let _ = self
                .metrics
                .consumer_lag
                .remove_label_values(&[&*partition.topic, &partition.partition.to_string()]);
        }
        self.health.set_assigned_partitions(assigned.len());
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<Partition> {
    list.elements()
        .iter()
        .map(|e| Partition {
            topic: e.topic().into(),
            partition: e.partition(),
        })
        .collect()
}

impl ClientContext for ConsumerEvents {
    fn stats(&self, statistics: Statistics) {
        self.health
            .set_broker_up(KafkaClient::Consumer, any_broker_up(&statistics));
        let assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        for partition in assigned.iter() {
            let lag = statistics
                .topics
                .get(&*partition.topic)
                .and_then(|t| t.partitions.get(&partition.partition))
                // Records between what the consumer has read and the end of
                // the partition (librdkafka's own `consumer_lag` counts from
                // the committed offset, which by design stays a window behind).
                .filter(|p| p.hi_offset >= 0 && p.app_offset >= 0)
                .map(|p| (p.hi_offset - p.app_offset).max(0));
            if let Some(lag) = lag {
                self.metrics
                    .consumer_lag
                    .with_label_values(&[&*partition.topic, &partition.partition.to_string()])
                    .set(lag);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        report_client_error(&self.stop, &self.client_errors, "consumer", &error, reason);
    }
}

impl ConsumerContext for ConsumerEvents {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let partitions = partitions_of(list);
                tracing::info!(partitions = ?partitions.iter().map(|p| format!("{}/{}", p.topic, p.partition)).collect::<Vec<_>>(), "partitions revoked: finishing and committing them");
                self.hand_back(consumer, &partitions);
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        self.record_commit(result, offsets);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let partitions = partitions_of(list);
            tracing::info!(partitions = ?partitions.iter().map(|p| format!("{}/{}", p.topic, p.partition)).collect::<Vec<_>>(), "partitions assigned");
            self.restore(&partitions);
            let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
            assigned.extend(partitions);
            self.health.set_assigned_partitions(assigned.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_queue_never_holds_more_samples_than_configured() {
        for capacity in [1, 2, 255, 256, 257, 511, 512, 8_192, 10_000] {
            let (messages, per_send) = work_queue_shape(capacity);
            assert!(messages >= 1 && per_send >= 1, "capacity {capacity}");
            assert!(per_send <= SAMPLES_PER_SEND, "capacity {capacity}");
            assert!(
                messages * per_send <= capacity,
                "capacity {capacity}: {messages} messages of {per_send}"
            );
        }
        // The default keeps its whole capacity, in full-size messages.
        assert_eq!(work_queue_shape(8_192), (32, 256));
        assert_eq!(work_queue_shape(100), (1, 100));
    }
}
