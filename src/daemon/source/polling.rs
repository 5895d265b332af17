//! The consumer loop: polls the group consumer until the stop, holds each
//! record's offset, hands samples to the scorer and malformed records to
//! the dead-letter topic, commits at the interval, then drains.

use super::intake::Intake;
use super::ConsumerEvents;
use crate::daemon::admin::health::Health;
use crate::daemon::admin::metrics::Metrics;
use crate::daemon::failure::report_client_error;
use crate::daemon::ledger::{Partition, SourceOffset};
use crate::daemon::scoring::Work;
use crate::daemon::sinks::Sink;
use crossbeam_channel::Sender;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The consumer loop.
pub struct ConsumerLoop {
    /// The group consumer.
    pub consumer: BaseConsumer<ConsumerEvents>,
    /// Holds, decodes and sets aside each record.
    pub intake: Intake,
    /// The scorer's queue.
    pub work: Sender<Work>,
    /// The producer.
    pub sink: Arc<Sink>,
    /// Metrics.
    pub metrics: Metrics,
    /// Health.
    pub health: Arc<Health>,
    /// Commit interval.
    pub commit_interval: Duration,
    /// Shutdown grace period.
    pub grace: Duration,
}

impl ConsumerLoop {
    /// Consumes until the stop begins (a signal or a fatal error), then
    /// drains, flushes and commits by the stop's drain deadline. Returns
    /// whether everything was finished in time.
    pub fn run(self) -> bool {
        let mut topics: HashMap<String, Arc<str>> = HashMap::new();
        let mut last_commit = Instant::now();
        let context = self.consumer.context().clone();
        let stop = self.sink.stop().clone();
        let running = || !stop.begun();
        while running() {
            self.health.consumer_beat();
            self.sink.resend_failed();
            // With samples waiting to be sent, only look for more that are
            // already here; when none are, send what there is.
            let timeout = if context.has_unsent_samples() {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            match self.consumer.poll(timeout) {
                None => {
                    context.send_samples(running);
                }
                Some(Err(error)) => {
                    report_client_error(&stop, &context.client_errors, "consumer", &error, "poll")
                }
                Some(Ok(message)) => self.take(&message, &mut topics, running),
            }
            if last_commit.elapsed() >= self.commit_interval {
                context.commit(
                    &self.consumer,
                    &context.assigned(),
                    CommitMode::Async,
                    false,
                );
                last_commit = Instant::now();
            }
        }
        tracing::info!(
            grace_s = self.grace.as_secs(),
            "shutting down: finishing the windows in flight"
        );
        self.health.set_shutting_down();
        let deadline = stop.drain_deadline().expect("the stop has begun");
        let (done, finished) = crossbeam_channel::bounded(1);
        let drained = context.send_samples(|| Instant::now() < deadline)
            && self
                .work
                .send_deadline(Work::Drain(deadline, done), deadline)
                .is_ok()
            && finished.recv_deadline(deadline).is_ok();
        let flushed = self.sink.flush(deadline);
        context.commit(&self.consumer, &context.assigned(), CommitMode::Sync, true);
        if !(drained && flushed) {
            tracing::warn!(drained, flushed, "the grace period ended before everything was finished; unfinished records are read again at the next start");
        }
        self.leave_group(stop.deadline().expect("the stop has begun"));
        drained && flushed
    }

    /// Leaves the group and serves the revoke that follows (nothing is left
    /// to finish by then), so that the consumer is closed with no
    /// assignment and no rebalance in progress. Closing while a revoke is
    /// still to be served hangs or aborts librdkafka 2.12 when the group
    /// is rebalancing (test
    /// `members_stopped_during_a_rebalance_exit_cleanly`). Records polled
    /// meanwhile are not held: the next owner reads them again.
    fn leave_group(&self, deadline: Instant) {
        self.consumer.unsubscribe();
        let context = self.consumer.context();
        let left = || {
            context.assigned().is_empty()
                && self
                    .consumer
                    .assignment()
                    .map_or(true, |list| list.count() == 0)
        };
        while Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(50));
            if left() {
                tracing::debug!("left the consumer group");
                return;
            }
        }
        tracing::warn!("the consumer group was not left before the deadline");
    }

    fn take(
        &self,
        message: &BorrowedMessage<'_>,
        topics: &mut HashMap<String, Arc<str>>,
        keep_waiting: impl Fn() -> bool,
    ) {
        let topic = match topics.get(message.topic()) {
            Some(topic) => topic.clone(),
            None => {
                let topic: Arc<str> = message.topic().into();
                topics.insert(message.topic().to_string(), topic.clone());
                topic
            }
        };
        let source = SourceOffset {
            partition: Partition {
                topic,
                partition: message.partition(),
            },
            offset: message.offset(),
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        if let Some(taken) = self
            .intake
            .take(source, message.key(), message.payload(), now_ms)
        {
            self.consumer
                .context()
                .queue_samples(taken, message, keep_waiting);
        }
    }
}
