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

use super::checkpoint::Epochs;
use super::failure::{
    backoff, classify_error, report_client_error, ErrorClass, Fatal, FatalKind, Stop,
};
use super::health::{any_broker_up, Health, KafkaClient};
use super::ledger::{Ledger, SourceOffset};
use super::metrics::Metrics;
use super::throttle::Throttle;
use crossbeam_channel::{Receiver, Sender};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use std::sync::{Arc, Mutex};
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
    /// Failed attempts so far (sets the back-off).
    pub attempts: u32,
    /// When its last delivery failed.
    pub failed_at: Option<Instant>,
    /// The last failure's class and message.
    pub failure: Option<(ErrorClass, String)>,
    /// Whether it is a reference to a refused output already.
    pub is_reference: bool,
}

impl Output {
    /// An output of `kind` to `topic` with nothing in it yet.
    pub fn new(kind: OutputKind, topic: &str) -> Self {
        Self {
            kind,
            topic: topic.to_string(),
            partition: None,
            key: None,
            payload: None,
            headers: Vec::new(),
            holds: Vec::new(),
            source_time_ms: None,
            is_alert: false,
            epoch: 0,
            attempts: 0,
            failed_at: None,
            failure: None,
            is_reference: false,
        }
    }
}

/// Most bytes of a refused record kept in its reference dead letter.
pub const REFERENCE_BYTES: usize = 1024;

/// How often an output of the daemon's own (score, alert) or a reference may
/// be refused by the broker before it is set aside (or, for a reference, the
/// daemon stops): the broker refuses whole batches, so a refusal may be
/// another record's, and the output is sent again a few times first.
const MAX_REFUSALS: u32 = 8;

/// Delivery reports: release on success; on failure, by the error's class
/// ([`classify`](super::failure::classify)): send again after a back-off, set aside, or stop.
pub struct DeliveryReports {
    /// Which producer these reports are of.
    client: KafkaClient,
    ledger: Ledger,
    metrics: Metrics,
    health: Arc<Health>,
    epochs: Arc<Epochs>,
    stop: Arc<Stop>,
    retry: Sender<Box<Output>>,
    failed_checkpoints: Sender<Box<Output>>,
    /// "Delivery failed" lines.
    failures: Throttle,
}

impl ClientContext for DeliveryReports {
    fn stats(&self, statistics: Statistics) {
        self.health
            .set_broker_up(self.client, any_broker_up(&statistics));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        report_client_error(&self.stop, &self.failures, "producer", &error, reason);
    }
}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = Box<Output>;

    fn delivery(&self, result: &DeliveryResult<'_>, output: Self::DeliveryOpaque) {
        match result {
            Ok(_) => self.delivered(output),
            Err((error, _)) => self.failed(error, output),
        }
    }
}

impl DeliveryReports {
    fn delivered(&self, output: Box<Output>) {
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
        self.epochs.settle(output.epoch, &output.holds);
        self.health.output_delivered(self.client);
    }

    fn failed(&self, error: &KafkaError, mut output: Box<Output>) {
        let class = classify_error(error);
        if let ErrorClass::Fatal(kind) = class {
            // The holds stay: nothing derived from them is committed.
            self.stop.fail(Fatal::new(
                kind,
                format!("delivering to {}: {error}", output.topic),
            ));
            return;
        }
        let kind = output.kind.as_str();
        if output.kind == OutputKind::State && output.payload.is_some() {
            self.epochs.settle(output.epoch, &output.holds);
            self.health.output_delivered(self.client);
            if class == ErrorClass::Refused {
                // Its samples' outputs are all acknowledged (the epoch
                // barrier): let the commit pass them. The entity goes on and
                // is checkpointed again with its next samples.
                self.metrics
                    .outputs_refused
                    .with_label_values(&[kind])
                    .inc();
                tracing::error!(topic = %output.topic, %error, "the state topic refuses a checkpoint; the entity carries on without it");
                for source in &output.holds {
                    self.ledger.release(source);
                }
                return;
            }
            self.metrics
                .produce_retries
                .with_label_values(&[kind])
                .inc();
            tracing::warn!(topic = %output.topic, %error, "a checkpoint failed; the entity's newer state is written instead");
            // Sending these bytes again could land them after a newer
            // checkpoint; the scorer takes the holds back and writes the
            // entity's current state at the next checkpoint.
            let _ = self.failed_checkpoints.send(output);
            return;
        }
        self.metrics
            .produce_retries
            .with_label_values(&[kind])
            .inc();
        if let Some(count) = self.failures.count(1, Instant::now()) {
            tracing::warn!(output = kind, topic = %output.topic, %error, failures = count, "deliveries failed; sending again after a back-off");
        }
        output.attempts += 1;
        output.failed_at = Some(Instant::now());
        output.failure = Some((class, error.to_string()));
        // The hold stays: the source offset cannot be committed until a retry lands.
        let _ = self.retry.send(output);
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
        let (retry, retries) = crossbeam_channel::unbounded();
        let (failed_checkpoint, failed_checkpoints) = crossbeam_channel::unbounded();
        let epochs = Arc::new(Epochs::default());
        let reports = |client: KafkaClient| DeliveryReports {
            client,
            ledger: ledger.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            epochs: epochs.clone(),
            stop: stop.clone(),
            retry: retry.clone(),
            failed_checkpoints: failed_checkpoint.clone(),
            failures: Throttle::new(LOG_EVERY),
        };
        let bulk = settings
            .bulk
            .create_with_context(reports(KafkaClient::Producer))?;
        let alerts = settings
            .alerts
            .create_with_context(reports(KafkaClient::AlertsProducer))?;
        Ok(Self {
            bulk,
            alerts,
            ledger,
            metrics,
            health,
            epochs,
            stop,
            dead_letter_topic: settings.dead_letter_topic,
            retries,
            waiting: Mutex::new(Vec::new()),
            failed_checkpoints,
            enqueue_failures: Throttle::new(LOG_EVERY),
            abandoned: Throttle::new(LOG_EVERY),
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
            let error = match self.try_enqueue(output) {
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
                    if !self.wait(Duration::from_millis(2), &output) {
                        return;
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
                    self.abandon(&output);
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
                    if !self.wait(backoff(output.attempts), &output) {
                        return;
                    }
                }
            }
        }
    }

    /// One attempt to hand `output` to its producer.
    fn try_enqueue(&self, output: Box<Output>) -> Result<(), (KafkaError, Box<Output>)> {
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
        self.producer(kind)
            .send(record)
            .map_err(|(error, record)| (error, record.delivery_opaque))
    }

    /// Sleeps `pause` in short steps; false (and `output` given up) once
    /// the stop's deadline has passed.
    fn wait(&self, pause: Duration, output: &Output) -> bool {
        let until = Instant::now() + pause;
        loop {
            if self.stop.overdue() {
                self.abandon(output);
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
    fn abandon(&self, output: &Output) {
        if let Some(count) = self.abandoned.count(1, Instant::now()) {
            tracing::warn!(output = output.kind.as_str(), topic = %output.topic, outputs = count, "outputs given up at the stop: their records are not committed and are read again at the next start");
        }
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
            self.abandon(&output);
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
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut *waiting)
                .into_iter()
                .partition(|o| o.failed_at.is_none_or(|at| now >= at + backoff(o.attempts)));
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
    fn retries_pending(&self) -> bool {
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
                flushed &= producer.flush(left.min(Duration::from_millis(200))).is_ok();
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

    /// The error behind a producer's fatal state (librdkafka reports a fatal
    /// error as `_FATAL`; this is the broker's or the producer's own code).
    pub fn fatal_cause(&self) -> Option<RDKafkaErrorCode> {
        [&self.bulk, &self.alerts]
            .iter()
            .find_map(|producer| producer.client().fatal_error())
            .map(|(code, _)| code)
    }
}

/// How often a repeated failure is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A refused output as a small dead letter: where its record is (source
/// topic, partition and offset), its size, why it was set aside and why it
/// was refused, and its first [`REFERENCE_BYTES`] bytes. It takes over the
/// output's holds and epoch.
pub fn reference(output: Output, dead_letter_topic: &str, why: &str) -> Output {
    let size =
        output.payload.as_ref().map_or(0, Vec::len) + output.key.as_ref().map_or(0, Vec::len);
    let mut headers = if output.kind == OutputKind::DeadLetter {
        output.headers
    } else {
        let mut headers = vec![
            ("anomalyd-reason".to_string(), b"output_refused".to_vec()),
            (
                "anomalyd-detail".to_string(),
                format!("a {} output to {}", output.kind.as_str(), output.topic).into_bytes(),
            ),
        ];
        if let Some(source) = output.holds.first() {
            headers.push(("anomalyd-source".to_string(), source_header(source)));
        }
        headers
    };
    headers.push((
        "anomalyd-original-size".to_string(),
        size.to_string().into_bytes(),
    ));
    headers.push(("anomalyd-refused".to_string(), why.as_bytes().to_vec()));
    let cut = |bytes: Option<Vec<u8>>| {
        bytes.map(|mut b| {
            b.truncate(REFERENCE_BYTES);
            b
        })
    };
    Output {
        key: cut(output.key),
        payload: Some(cut(output.payload).unwrap_or_default()),
        headers,
        holds: output.holds,
        epoch: output.epoch,
        is_reference: true,
        ..Output::new(OutputKind::DeadLetter, dead_letter_topic)
    }
}

/// `topic/partition/offset`.
fn source_header(source: &SourceOffset) -> Vec<u8> {
    format!(
        "{}/{}/{}",
        source.partition.topic, source.partition.partition, source.offset
    )
    .into_bytes()
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
        key,
        payload: Some(payload),
        headers: vec![
            (
                "anomalyd-reason".into(),
                reason.as_str().as_bytes().to_vec(),
            ),
            ("anomalyd-detail".into(), detail.as_bytes().to_vec()),
            ("anomalyd-source".into(), source_header(source)),
        ],
        holds: vec![source.clone()],
        ..Output::new(OutputKind::DeadLetter, topic)
    }
}
