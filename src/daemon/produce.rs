//! The producer side: every output (alert, score, dead letter) is sent with
//! an idempotent producer and holds its source offset in the ledger until the
//! broker acknowledges it. A failed delivery is sent again, never dropped, so
//! its source offset stays held and cannot be committed.

use super::health::Health;
use super::ledger::{Ledger, SourceOffset};
use super::metrics::Metrics;
use crossbeam_channel::{Receiver, Sender};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
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
}

impl OutputKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alerts => "alerts",
            Self::Scores => "scores",
            Self::DeadLetter => "dead_letter",
        }
    }
}

/// One message to produce.
#[derive(Debug, Clone)]
pub struct Output {
    /// Which output.
    pub kind: OutputKind,
    /// Topic.
    pub topic: String,
    /// Record key (the entity, or the original key for dead letters).
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub payload: Vec<u8>,
    /// Record headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The input record it derives from: held until acknowledged.
    pub source: SourceOffset,
    /// Kafka timestamp of that input record (for the end-to-end latency).
    pub source_time_ms: Option<i64>,
    /// Whether it is an alert event (counted in the end-to-end latency).
    pub is_alert: bool,
}

/// Delivery reports: release on success, send again on failure.
pub struct DeliveryReports {
    ledger: Ledger,
    metrics: Metrics,
    health: Arc<Health>,
    retry: Sender<Box<Output>>,
}

impl ClientContext for DeliveryReports {}

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
                self.ledger.release(&output.source);
                self.health.output_delivered();
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

/// The shared producer.
pub struct Sink {
    producer: ThreadedProducer<DeliveryReports>,
    ledger: Ledger,
    health: Arc<Health>,
    retries: Receiver<Box<Output>>,
}

impl Sink {
    /// A producer with `config` (see [`super::clients::producer_config`]).
    pub fn new(
        config: ClientConfig,
        ledger: Ledger,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Result<Self, KafkaError> {
        let (retry, retries) = crossbeam_channel::unbounded();
        let producer = config.create_with_context(DeliveryReports {
            ledger: ledger.clone(),
            metrics,
            health: health.clone(),
            retry,
        })?;
        Ok(Self {
            producer,
            ledger,
            health,
            retries,
        })
    }

    /// Sends `output`; its source offset must already be held for it. Waits
    /// while the producer's queue is full (back-pressure), never drops.
    pub fn send(&self, output: Box<Output>) {
        self.health.output_sent();
        self.enqueue(output);
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
            let topic = output.topic.clone();
            let payload = output.payload.clone();
            let key = output.key.clone();
            let mut record = BaseRecord::with_opaque_to(&topic, output)
                .payload(&payload)
                .headers(headers);
            if let Some(key) = &key {
                record = record.key(key);
            }
            match self.producer.send(record) {
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
            let left = deadline.saturating_duration_since(Instant::now());
            let flushed = self
                .producer
                .flush(left.min(Duration::from_millis(200)))
                .is_ok();
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
        key,
        payload,
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
        source: source.clone(),
        source_time_ms: None,
        is_alert: false,
    }
}
