//! The producer side: every output (alert, score, dead letter, checkpoint)
//! is sent with an idempotent producer and holds its source offsets in the
//! ledger until the broker acknowledges it. Alert and gap events have a
//! producer of their own that sends each at once; the rest are batched.
//!
//! Failures go by their class (`failure::classify`): a transient one is
//! sent again after a bounded back-off, never dropped, so its source offsets
//! stay held and cannot be committed; an output refused for its content
//! (too large, invalid) is set aside as a small reference on the dead-letter
//! topic, which takes over its holds, so one poison record never stops a
//! partition; a fatal one stops the daemon. A failed checkpoint goes back to
//! the scorer instead, which writes the entity's newer state in its place.
//! Every wait gives up at the stop's deadline, keeping its holds.

mod delivery;
pub mod events;
#[cfg(test)]
pub mod memory;
mod output;
mod transport;

pub use delivery::DeliveryReports;
pub use output::{dead_letter, reference, Output, OutputKind, REFERENCE_BYTES};
pub use transport::Transport;

use super::failure::{backoff, classify_error, ErrorClass, Fatal, FatalKind, Stop};
use super::ledger::{abandon_all, Ledger};
use super::throttle::Throttle;
use crate::daemon::admin::health::{Health, KafkaClient};
use crate::daemon::admin::metrics::Metrics;
use crate::daemon::state::Epochs;
use crossbeam_channel::Receiver;
use output::producer_of;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::ThreadedProducer;
use rdkafka::ClientConfig;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often an output of the daemon's own (score, alert) or a reference may
/// be refused by the broker before it is set aside (or, for a reference, the
/// daemon stops): the broker refuses whole batches, so a refusal may be
/// another record's, and the output is sent again a few times first.
const MAX_REFUSALS: u32 = 8;

/// The daemon's producers, shared by its threads: one for alert and gap
/// events, one for everything else. Both report to the same ledger and
/// checkpoint epochs, and failed deliveries of either come back here.
pub struct Sink {
    /// Scores, dead letters, checkpoints: batched (`linger.ms`).
    bulk: Box<dyn Transport>,
    /// Alert and gap events: sent at once.
    alerts: Box<dyn Transport>,
    /// How long a failed output waits before it is sent again, by attempt.
    backoff: fn(u32) -> Duration,
    ledger: Ledger,
    metrics: Metrics,
    health: Arc<Health>,
    epochs: Arc<Epochs>,
    stop: Arc<Stop>,
    dead_letter_topic: String,
    retries: Receiver<Box<Output>>,
    /// Failed outputs waiting for their back-off to end (boxed as they
    /// travel as delivery opaques).
    #[allow(clippy::vec_box)]
    waiting: Mutex<Vec<Box<Output>>>,
    failed_checkpoints: Receiver<Box<Output>>,
    /// "Cannot enqueue" lines.
    enqueue_failures: Throttle,
    /// Outputs given up at the stop's deadline.
    abandoned: Throttle,
}

/// Where the sink's outputs and failures go.
pub struct SinkSettings {
    /// The bulk producer's configuration ([`super::clients::producer_config`]).
    pub bulk: ClientConfig,
    /// The alerts producer's ([`super::clients::alerts_producer_config`]).
    pub alerts: ClientConfig,
    /// `kafka.dead_letter_topic`, where refused outputs are set aside.
    pub dead_letter_topic: String,
}

impl Sink {
    /// The producers; failures go by their class ([`classify`](super::failure::classify)) and every
    /// wait gives up at `stop`'s deadline.
    pub fn new(
        settings: SinkSettings,
        ledger: Ledger,
        metrics: Metrics,
        health: Arc<Health>,
        stop: Arc<Stop>,
    ) -> Result<Self, KafkaError> {
        let SinkSettings {
            bulk,
            alerts,
            dead_letter_topic,
        } = settings;
        let parts = SinkParts {
            ledger,
            metrics,
            health,
            stop,
            dead_letter_topic,
        };
        parts.build(backoff, |reports| {
            let config = match reports.client {
                KafkaClient::AlertsProducer => &alerts,
                _ => &bulk,
            };
            let producer: ThreadedProducer<DeliveryReports> =
                config.create_with_context(reports)?;
            Ok(Box::new(producer))
        })
    }

    /// The producer that sends outputs of `kind`.
    fn producer(&self, kind: OutputKind) -> &dyn Transport {
        match producer_of(kind) {
            KafkaClient::AlertsProducer => &*self.alerts,
            _ => &*self.bulk,
        }
    }

    /// Sends `output`; its holds must already be in the ledger. Waits while
    /// the producer's queue is full (back-pressure) until the stop's
    /// deadline; an output given up there keeps its holds, so its record is
    /// not committed and is read again at the next start.
    pub fn send(&self, mut output: Box<Output>) {
        self.health.output_sent(producer_of(output.kind));
        output.epoch = self.epochs.register(&output.holds);
        self.enqueue(output);
    }

    /// Which outputs are acknowledged, by checkpoint epoch.
    pub fn epochs(&self) -> &Epochs {
        &self.epochs
    }

    /// The daemon's stop.
    pub fn stop(&self) -> &Arc<Stop> {
        &self.stop
    }

    /// Checkpoints whose delivery failed (their holds are the receiver's now).
    pub fn failed_checkpoints(&self) -> &Receiver<Box<Output>> {
        &self.failed_checkpoints
    }

    /// Hands `output` to the producer: waits while its queue is full, backs
    /// off on a transient error, sets aside a refused output, stops on a
    /// fatal error.
    fn enqueue(&self, output: Box<Output>) {
        let mut output = output;
        loop {
            let error = match self.producer(output.kind).enqueue(output) {
                Ok(()) => return,
                Err((error, back)) => {
                    output = back;
                    error
                }
            };
            let class = match &error {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => None,
                other => Some(classify_error(other)),
            };
            match class {
                None => {
                    if !self.wait(Duration::from_millis(2)) {
                        return self.abandon(output);
                    }
                }
                Some(ErrorClass::Refused) => {
                    // Refused here, by the producer itself: no retry can pass.
                    let why = format!("the producer refused it: {error}");
                    return self.set_aside(output, why, false);
                }
                Some(ErrorClass::Fatal(kind)) => {
                    self.stop.fail(Fatal::new(
                        kind,
                        format!("sending to {}: {error}", output.topic),
                    ));
                    self.abandon(output);
                    return;
                }
                Some(ErrorClass::Transient) => {
                    output.attempts += 1;
                    self.metrics
                        .produce_retries
                        .with_label_values(&[output.kind.as_str()])
                        .inc();
                    if let Some(count) = self.enqueue_failures.count(1, Instant::now()) {
                        tracing::error!(%error, topic = %output.topic, failures = count, "cannot enqueue outputs; trying again after a back-off");
                    }
                    if !self.wait((self.backoff)(output.attempts)) {
                        return self.abandon(output);
                    }
                }
            }
        }
    }

    /// Sleeps `pause` in short steps; false once the stop's deadline has
    /// passed (the caller gives the output up).
    fn wait(&self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        loop {
            if self.stop.overdue() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }

    /// Gives `output` up: its holds stay, so its record is read again.
    fn abandon(&self, output: Box<Output>) {
        if let Some(count) = self.abandoned.count(1, Instant::now()) {
            tracing::warn!(output = output.kind.as_str(), topic = %output.topic, outputs = count, "outputs given up at the stop: their records are not committed and are read again at the next start");
        }
        abandon_all(output.holds);
    }

    /// A refused output: a dead letter, an output the producer itself
    /// refused, or one the broker refused too often goes to the dead-letter
    /// topic as a reference; others (their back-off over) are sent again.
    fn set_aside(&self, output: Box<Output>, why: String, may_retry: bool) {
        self.metrics
            .outputs_refused
            .with_label_values(&[output.kind.as_str()])
            .inc();
        let retry = may_retry && output.attempts < MAX_REFUSALS;
        if output.is_reference && retry {
            return self.enqueue(output);
        }
        if output.is_reference {
            self.stop.fail(Fatal::new(
                FatalKind::Topic,
                format!(
                    "the dead-letter topic {} refuses even a reference record ({} bytes): {why}",
                    output.topic,
                    output.payload.as_ref().map_or(0, Vec::len)
                ),
            ));
            self.abandon(output);
            return;
        }
        if retry && output.kind != OutputKind::DeadLetter {
            return self.enqueue(output);
        }
        tracing::warn!(output = output.kind.as_str(), topic = %output.topic, %why, "an output is refused for its content: set aside as a reference on the dead-letter topic");
        self.enqueue(Box::new(reference(*output, &self.dead_letter_topic, &why)))
    }

    /// Sends again the failed messages whose back-off has ended.
    pub fn resend_failed(&self) {
        let due = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.extend(self.retries.try_iter());
            if waiting.is_empty() {
                return;
            }
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut *waiting).into_iter().partition(|o| {
                    o.failed_at
                        .is_none_or(|at| now >= at + (self.backoff)(o.attempts))
                });
            *waiting = later;
            due
        };
        for mut output in due {
            // Still counted as awaiting delivery since its first send.
            match output.failure.take() {
                Some((ErrorClass::Refused, why)) => {
                    self.set_aside(output, format!("the broker refused it: {why}"), true);
                }
                _ => {
                    self.enqueue(output);
                }
            }
        }
    }

    /// Failed messages not yet sent again.
    pub(crate) fn retries_pending(&self) -> bool {
        !self.retries.is_empty()
            || !self
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Waits until every message is acknowledged (failed ones are sent again), or `deadline`.
    /// Returns whether everything was acknowledged.
    pub fn flush(&self, deadline: Instant) -> bool {
        loop {
            self.resend_failed();
            let mut flushed = true;
            for producer in [&self.alerts, &self.bulk] {
                let left = deadline.saturating_duration_since(Instant::now());
                flushed &= producer.flush(left.min(Duration::from_millis(200)));
            }
            if flushed && !self.retries_pending() {
                return true;
            }
            if Instant::now() >= deadline || self.stop.overdue() {
                return false;
            }
        }
    }

    /// The ledger outputs hold their offsets in.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// `kafka.dead_letter_topic`, where records and outputs are set aside.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// The error behind a producer's fatal state (librdkafka reports a fatal
    /// error as `_FATAL`; this is the broker's or the producer's own code).
    pub fn fatal_cause(&self) -> Option<RDKafkaErrorCode> {
        [&self.bulk, &self.alerts]
            .iter()
            .find_map(|producer| producer.fatal_cause())
    }
}

/// What a sink is made of besides its two transports.
pub struct SinkParts {
    /// The ledger outputs hold their offsets in.
    pub ledger: Ledger,
    /// Metrics.
    pub metrics: Metrics,
    /// Health.
    pub health: Arc<Health>,
    /// The daemon's stop.
    pub stop: Arc<Stop>,
    /// `kafka.dead_letter_topic`, where refused outputs are set aside.
    pub dead_letter_topic: String,
}

impl SinkParts {
    /// A sink whose outputs go through the transports `make` builds around
    /// their delivery reports (the bulk one first, then the alerts one), and
    /// whose failed outputs wait `backoff(attempt)` before they are sent again.
    pub fn build(
        self,
        backoff: fn(u32) -> Duration,
        mut make: impl FnMut(DeliveryReports) -> Result<Box<dyn Transport>, KafkaError>,
    ) -> Result<Sink, KafkaError> {
        self.stop.closes(&self.ledger);
        let (retry, retries) = crossbeam_channel::unbounded();
        let (failed_checkpoint, failed_checkpoints) = crossbeam_channel::unbounded();
        let epochs = Arc::new(Epochs::default());
        let mut reports = |client: KafkaClient| {
            make(DeliveryReports {
                client,
                ledger: self.ledger.clone(),
                metrics: self.metrics.clone(),
                health: self.health.clone(),
                epochs: epochs.clone(),
                stop: self.stop.clone(),
                retry: retry.clone(),
                failed_checkpoints: failed_checkpoint.clone(),
                failures: Throttle::new(LOG_EVERY),
            })
        };
        let bulk = reports(KafkaClient::Producer)?;
        let alerts = reports(KafkaClient::AlertsProducer)?;
        Ok(Sink {
            bulk,
            alerts,
            backoff,
            ledger: self.ledger,
            metrics: self.metrics,
            health: self.health,
            epochs,
            stop: self.stop,
            dead_letter_topic: self.dead_letter_topic,
            retries,
            waiting: Mutex::new(Vec::new()),
            failed_checkpoints,
            enqueue_failures: Throttle::new(LOG_EVERY),
            abandoned: Throttle::new(LOG_EVERY),
        })
    }
}

/// How often a repeated failure is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);
