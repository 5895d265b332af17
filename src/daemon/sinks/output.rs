//! What the daemon produces: an [`Output`] (alert, score, dead letter or
//! checkpoint) with the input offsets it holds, and the dead letters made
//! from a refused record or a refused output.

use crate::daemon::admin::health::KafkaClient;
use crate::daemon::failure::ErrorClass;
use crate::daemon::ledger::{Hold, SourceOffset};
use crate::daemon::source::decode::RejectReason;
use std::time::Instant;

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
pub(super) fn producer_of(kind: OutputKind) -> KafkaClient {
    match kind {
        OutputKind::Alerts => KafkaClient::AlertsProducer,
        OutputKind::Scores | OutputKind::DeadLetter | OutputKind::State => KafkaClient::Producer,
    }
}

/// One message to produce.
#[derive(Debug)]
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
    pub holds: Vec<Hold>,
    /// Kafka timestamp of that input record (for the end-to-end latency).
    pub source_time_ms: Option<i64>,
    /// Whether it is an alert event (counted in the end-to-end latency).
    pub is_alert: bool,
    /// The checkpoint epoch it was sent in (set by [`Sink::send`](super::Sink::send)).
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
        if let Some(hold) = output.holds.first() {
            headers.push(("anomalyd-source".to_string(), source_header(hold.source())));
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
/// payload, with the reason and where it came from in headers. It takes
/// over the record's hold.
pub fn dead_letter(
    topic: &str,
    hold: Hold,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    reason: RejectReason,
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
            ("anomalyd-source".into(), source_header(hold.source())),
        ],
        holds: vec![hold],
        ..Output::new(OutputKind::DeadLetter, topic)
    }
}
