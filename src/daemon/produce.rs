//! The producer side: every output (alert, score, dead letter, checkpoint)
//! is sent with an idempotent producer and holds its source offsets in the
//! ledger until the broker acknowledges it. Alert and gap events have a
//! producer of their own that sends each at once; the rest are batched. A
//! failed delivery is sent again, never dropped, so its source offsets stay
//! held and cannot be committed; a failed checkpoint goes back to the scorer
//! instead, which writes the entity's newer state in its place.

use super::checkpoint::Epochs;
use super::health::{any_broker_up, Health, KafkaClient};
use super::ledger::{Ledger, SourceOffset};
use super::metrics::Metrics;
use crossbeam_channel::{Receiver, Sender};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which output a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Alert and gap events.
    Alerts,
    /// Window scores.
    Scores,
    /// Records set aside.
    DeadLetter,
    /// Entity-state checkpoints and tombstones.
    State,
}

impl OutputKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alerts => "alerts",
            Self::Scores => "scores",
            Self::DeadLetter => "dead_letter",
            Self::State => "state",
        }
    }
}

/// Which producer sends outputs of `kind`: alert and gap events go out at
/// once on their own, everything else is batched.
fn producer_of(kind: OutputKind) -> KafkaClient {
    match kind {
        OutputKind::Alerts => KafkaClient::AlertsProducer,
        OutputKind::Scores | OutputKind::DeadLetter | OutputKind::State => KafkaClient::Producer,
    }
}

/// One message to produce.
#[derive(Debug, Clone)]
pub struct Output {
    /// Which output.
    pub kind: OutputKind,
    /// Topic.
    pub topic: String,
    /// Partition; `None` = by key.
    pub partition: Option<i32>,
    /// Record key (the entity, or the original key for dead letters).
    pub key: Option<Vec<u8>>,
    /// Record value; `None` is a tombstone.
    pub payload: Option<Vec<u8>>,
    /// Record headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Input offsets held for it, released when it is acknowledged: the
    /// record it derives from, or the samples a checkpoint covers.
    pub holds: Vec<SourceOffset>,
    /// Kafka timestamp of that input record (for the end-to-end latency).
    pub source_time_ms: Option<i64>,
    /// Whether it is an alert event (counted in the end-to-end latency).
    pub is_alert: bool,
    /// The checkpoint epoch it was sent in (set by [`Sink::send`]).
    pub epoch: u64,
}

/// Delivery reports: release on success, send again on failure.
pub struct DeliveryReports {
    /// Which producer these reports are of.
    client: KafkaClient,
    ledger: Ledger,
    metrics: Metrics,
    health: Arc<Health>,
    epochs: Arc<Epochs>,
    retry: Sender<Box<Output>>,
    failed_checkpoints: Sender<Box<Output>>,
}

impl ClientContext for DeliveryReports {
    fn stats(&self, statistics: Statistics) {
        self.health
            .set_broker_up(self.client, any_broker_up(&statistics));
    }
}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = Box<Output>;

    fn delivery(&self, result: &DeliveryResult<'_>, output: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                self.metrics
                    .produced
                    .with_label_values(&[output.kind.as_str()])
                    .inc();
                if output.is_alert {
                    if let Some(ms) = output.source_time_ms {
                        let now = chrono::Utc::now().timestamp_millis();
                        self.metrics
                            .end_to_end_seconds
                            .observe((now - ms).max(0) as f64 / 1000.0);
                    }
                }
                for source in &output.holds {
                    self.ledger.release(source);
                }
                self.epochs.settle(output.epoch);
                self.health.output_delivered(self.client);
            }
            Err((error, _)) if output.kind == OutputKind::State && output.payload.is_some() => {
                tracing::warn!(topic = %output.topic, %error, "a checkpoint failed; the entity's newer state is written instead");
                self.metrics
                    .produce_retries
                    .with_label_values(&[output.kind.as_str()])
                    .inc();
                // Sending these bytes again could land them after a newer
                // checkpoint; the scorer takes the holds back and writes the
                // entity's current state at the next checkpoint.
                self.epochs.settle(output.epoch);
                self.health.output_delivered(self.client);
                let _ = self.failed_checkpoints.send(output);
            }
            Err((error, _)) => {
                tracing::warn!(output = output.kind.as_str(), topic = %output.topic, %error, "delivery failed; sending again");
                self.metrics
                    .produce_retries
                    .with_label_values(&[output.kind.as_str()])
                    .inc();
                // The hold stays: the source offset cannot be committed until a retry lands.
                let _ = self.retry.send(output);
            }
        }
    }
}

/// The daemon's producers, shared by its threads: one for alert and gap
/// events, one for everything else. Both report to the same ledger and
/// checkpoint epochs, and failed deliveries of either come back here.
pub struct Sink {
    /// Scores, dead letters, checkpoints: batched (`linger.ms`).
    bulk: ThreadedProducer<DeliveryReports>,
    /// Alert and gap events: sent at once.
    alerts: ThreadedProducer<DeliveryReports>,
    ledger: Ledger,
    health: Arc<Health>,
    epochs: Arc<Epochs>,
    retries: Receiver<Box<Output>>,
    failed_checkpoints: Receiver<Box<Output>>,
}

impl Sink {
    /// The producers, with `bulk` and `alerts` configurations (see
    /// [`super::clients::producer_config`] and
    /// [`super::clients::alerts_producer_config`]).
    pub fn new(
        bulk: ClientConfig,
        alerts: ClientConfig,
        ledger: Ledger,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Result<Self, KafkaError> {
        let (retry, retries) = crossbeam_channel::unbounded();
        let (failed_checkpoint, failed_checkpoints) = crossbeam_channel::unbounded();
        let epochs = Arc::new(Epochs::default());
        let reports = |client: KafkaClient| DeliveryReports {
            client,
            ledger: ledger.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            epochs: epochs.clone(),
            retry: retry.clone(),
            failed_checkpoints: failed_checkpoint.clone(),
        };
        let bulk = bulk.create_with_context(reports(KafkaClient::Producer))?;
        let alerts = alerts.create_with_context(reports(KafkaClient::AlertsProducer))?;
        Ok(Self {
            bulk,
            alerts,
            ledger,
            health,
            epochs,
            retries,
            failed_checkpoints,
        })
    }

    /// The producer that sends outputs of `kind`.
    fn producer(&self, kind: OutputKind) -> &ThreadedProducer<DeliveryReports> {
        match producer_of(kind) {
            KafkaClient::AlertsProducer => &self.alerts,
            _ => &self.bulk,
        }
    }

    /// Sends `output`; its holds must already be in the ledger. Waits while
    /// the producer's queue is full (back-pressure), never drops.
    pub fn send(&self, mut output: Box<Output>) {
        self.health.output_sent(producer_of(output.kind));
        output.epoch = self.epochs.register();
        self.enqueue(output);
    }

    /// Which outputs are acknowledged, by checkpoint epoch.
    pub fn epochs(&self) -> &Epochs {
        &self.epochs
    }

    /// Checkpoints whose delivery failed (their holds are the receiver's now).
    pub fn failed_checkpoints(&self) -> &Receiver<Box<Output>> {
        &self.failed_checkpoints
    }

    /// Hands `output` to the producer, waiting while its queue is full.
    fn enqueue(&self, output: Box<Output>) {
        let mut output = output;
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(output.headers.len());
            for (name, value) in &output.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_slice()),
                });
            }
            let kind = output.kind;
            let topic = output.topic.clone();
            let payload = output.payload.clone();
            let key = output.key.clone();
            let partition = output.partition;
            let mut record = BaseRecord::with_opaque_to(&topic, output).headers(headers);
            if let Some(payload) = &payload {
                record = record.payload(payload);
            }
            if let Some(key) = &key {
                record = record.key(key);
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            match self.producer(kind).send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    output = record.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((error, record)) => {
                    tracing::error!(%error, topic = %topic, "cannot enqueue a message; trying again in 100 ms");
                    output = record.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Sends again every message whose delivery failed so far.
    pub fn resend_failed(&self) {
        while let Ok(output) = self.retries.try_recv() {
            // Still counted as awaiting delivery since its first send.
            self.enqueue(output);
        }
    }

    /// Waits until every message is acknowledged (failed ones are sent again), or `deadline`.
    /// Returns whether everything was acknowledged.
    pub fn flush(&self, deadline: Instant) -> bool {
        loop {
            self.resend_failed();
            let mut flushed = true;
            for producer in [&self.alerts, &self.bulk] {
                let left = deadline.saturating_duration_since(Instant::now());
                flushed &= producer.flush(left.min(Duration::from_millis(200))).is_ok();
            }
            if flushed && self.retries.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// The ledger outputs hold their offsets in.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

/// The dead-letter message for a record set aside: the original key and
/// payload, with the reason and where it came from in headers.
pub fn dead_letter(
    topic: &str,
    source: &SourceOffset,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    reason: super::decode::RejectReason,
    detail: &str,
) -> Output {
    Output {
        kind: OutputKind::DeadLetter,
        topic: topic.to_string(),
        partition: None,
        key,
        payload: Some(payload),
        headers: vec![
            (
                "anomalyd-reason".into(),
                reason.as_str().as_bytes().to_vec(),
            ),
            ("anomalyd-detail".into(), detail.as_bytes().to_vec()),
            (
                "anomalyd-source".into(),
                format!(
                    "{}/{}/{}",
                    source.partition.topic, source.partition.partition, source.offset
                )
                .into_bytes(),
            ),
        ],
        holds: vec![source.clone()],
        source_time_ms: None,
        is_alert: false,
        epoch: 0,
    }
}
