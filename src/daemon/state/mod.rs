//! Entity-state checkpoints: each changed entity's whole detection state is
//! written to a compacted topic, partition for partition with the input, and
//! read back when a partition is assigned, so a restart, a crash or a new
//! owner carries on exactly where the last one stopped.
//!
//! Ordering (ARCHITECTURE.md, "Delivery"): a checkpoint taken at *epoch* `e`
//! is sent only once every output sent in epochs `≤ e` is acknowledged. So a
//! sample a checkpoint covers never has an output still in flight, and a
//! restored entity may skip replayed samples up to the checkpoint's offset
//! without losing an alert. The checkpoint's acknowledgement releases the
//! offset holds of the samples it covers; only then can the input commit
//! pass them.

mod topic;

pub use topic::{ensure_topic, StateTopicError};

use super::config::DaemonConfig;
use super::ledger::{Hold, Partition, SourceOffset};
use crate::detect::EntityDetector;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The checkpoint format written; a checkpoint of a version outside
/// [`OLDEST_READABLE_FORMAT`]`..=FORMAT_VERSION` is not restored (its entity
/// starts afresh, counted as unreadable). Version 2: the likelihood
/// calibrator keeps its history in blocks. Version 3: the window buffer
/// holds rows normalised by the model the checkpoint names (version 2 kept
/// them raw; they are normalised when restored).
pub const FORMAT_VERSION: u32 = 3;

/// The oldest checkpoint format this build restores.
pub const OLDEST_READABLE_FORMAT: u32 = 2;

/// The first format whose window buffers hold normalised rows (older ones
/// are normalised when restored).
pub const NORMALISED_ROWS_FORMAT: u32 = 3;

/// The record header naming the consumer group whose state a checkpoint
/// is. A restore skips the checkpoints of other groups (a state topic
/// set explicitly may be shared); records without it, from builds before
/// it, are restored.
pub const GROUP_HEADER: &str = "anomalyd-group";

/// One entity's checkpoint as written (borrows the detector).
#[derive(Serialize)]
struct CheckpointRef<'a> {
    format_version: u32,
    entity: &'a str,
    topic: &'a str,
    partition: i32,
    through_offset: i64,
    last_ms: i64,
    model_version: &'a str,
    detector: &'a EntityDetector,
}

/// One entity's checkpoint as read back.
#[derive(Debug, Clone, Deserialize)]
pub struct Checkpoint {
    /// [`FORMAT_VERSION`] of the build that wrote it.
    pub format_version: u32,
    /// The entity.
    pub entity: String,
    /// The input partition of its latest sample.
    pub topic: String,
    /// See `topic`.
    pub partition: i32,
    /// The offset of the latest sample the state includes: replayed samples
    /// of the entity at or before it are skipped.
    pub through_offset: i64,
    /// Event time of the latest sample (ms).
    pub last_ms: i64,
    /// The model that scored it.
    pub model_version: String,
    /// Window buffer, ranges, calibration, novelty gate and alert state.
    pub detector: EntityDetector,
}

/// Just the version, read first so another format gets a clear message.
#[derive(Deserialize)]
struct Header {
    format_version: u32,
}

impl Checkpoint {
    /// The input partition and offset it covers.
    pub fn source(&self, topic: std::sync::Arc<str>) -> SourceOffset {
        SourceOffset {
            partition: Partition {
                topic,
                partition: self.partition,
            },
            offset: self.through_offset,
        }
    }

    /// Reads a checkpoint record's value.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let header: Header =
            rmp_serde::from_slice(bytes).map_err(|e| format!("not a checkpoint: {e}"))?;
        if !(OLDEST_READABLE_FORMAT..=FORMAT_VERSION).contains(&header.format_version) {
            return Err(format!(
                "checkpoint format {} (this build reads {OLDEST_READABLE_FORMAT} to {FORMAT_VERSION})",
                header.format_version
            ));
        }
        rmp_serde::from_slice(bytes).map_err(|e| format!("unreadable checkpoint: {e}"))
    }
}

/// Encodes one entity's checkpoint (MessagePack with field names, so later
/// versions can add fields).
pub fn encode(
    entity: &str,
    through: &SourceOffset,
    last_ms: i64,
    model_version: &str,
    detector: &EntityDetector,
) -> Vec<u8> {
    encode_as(
        FORMAT_VERSION,
        entity,
        through,
        last_ms,
        model_version,
        detector,
    )
}

/// [`encode`] labelled as format 2, whose window rows were raw: for tests
/// that restore what an older build wrote.
#[cfg(test)]
pub(crate) fn encode_as_format_2(
    entity: &str,
    through: &SourceOffset,
    last_ms: i64,
    model_version: &str,
    detector_with_raw_rows: &EntityDetector,
) -> Vec<u8> {
    encode_as(
        2,
        entity,
        through,
        last_ms,
        model_version,
        detector_with_raw_rows,
    )
}

fn encode_as(
    format_version: u32,
    entity: &str,
    through: &SourceOffset,
    last_ms: i64,
    model_version: &str,
    detector: &EntityDetector,
) -> Vec<u8> {
    rmp_serde::to_vec_named(&CheckpointRef {
        format_version,
        entity,
        topic: &through.partition.topic,
        partition: through.partition.partition,
        through_offset: through.offset,
        last_ms,
        model_version,
        detector,
    })
    .expect("entity state serialises")
}

/// Counts outputs not yet acknowledged, by input partition and the epoch
/// they were sent in. A checkpoint of a partition's entities waits only for
/// that partition's earlier outputs: a partition whose outputs fail does not
/// hold back the checkpoints (and so the commits) of the others.
#[derive(Debug, Default)]
pub struct Epochs {
    inner: Mutex<EpochCounts>,
}

#[derive(Debug, Default)]
struct EpochCounts {
    current: u64,
    /// Per input partition: epoch → outputs not yet acknowledged.
    pending: HashMap<Partition, BTreeMap<u64, u64>>,
}

/// The distinct partitions of `holds`.
fn partitions_of(holds: &[Hold]) -> impl Iterator<Item = &Partition> {
    fn partition(hold: &Hold) -> &Partition {
        &hold.source().partition
    }
    holds
        .iter()
        .enumerate()
        .filter(|(i, h)| !holds[..*i].iter().any(|e| partition(e) == partition(h)))
        .map(|(_, h)| partition(h))
}

impl Epochs {
    fn lock(&self) -> std::sync::MutexGuard<'_, EpochCounts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An output holding `holds` is being sent: counts it in the current
    /// epoch of each of their partitions; returns that epoch.
    pub fn register(&self, holds: &[Hold]) -> u64 {
        let mut counts = self.lock();
        let epoch = counts.current;
        for partition in partitions_of(holds) {
            *counts
                .pending
                .entry(partition.clone())
                .or_default()
                .entry(epoch)
                .or_insert(0) += 1;
        }
        epoch
    }

    /// An output of `epoch` holding `holds` is acknowledged (or, for a
    /// checkpoint that failed, replaced by a later one).
    pub fn settle(&self, epoch: u64, holds: &[Hold]) {
        let mut counts = self.lock();
        for partition in partitions_of(holds) {
            let Some(epochs) = counts.pending.get_mut(partition) else {
                continue;
            };
            if let Some(count) = epochs.get_mut(&epoch) {
                *count -= 1;
                if *count == 0 {
                    epochs.remove(&epoch);
                }
            }
            if epochs.is_empty() {
                counts.pending.remove(partition);
            }
        }
    }

    /// Ends the current epoch and returns it; later outputs count in the next.
    pub fn close(&self) -> u64 {
        let mut counts = self.lock();
        counts.current += 1;
        counts.current - 1
    }

    /// Whether every output of `epoch` and earlier is acknowledged on each
    /// partition of `holds`, or on every partition where `holds` is empty
    /// (a tombstone: it must not pass its entity's earlier checkpoint).
    pub fn settled(&self, epoch: u64, holds: &[Hold]) -> bool {
        let counts = self.lock();
        let clear =
            |epochs: &BTreeMap<u64, u64>| epochs.keys().next().is_none_or(|&first| first > epoch);
        if holds.is_empty() {
            return counts.pending.values().all(clear);
        }
        partitions_of(holds).all(|p| counts.pending.get(p).is_none_or(clear))
    }
}

/// Why the checkpoints of assigned partitions could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A Kafka client error.
    #[error("reading the state topic {topic}: {source}")]
    Kafka {
        /// The state topic.
        topic: String,
        /// The error.
        source: rdkafka::error::KafkaError,
    },
    /// The state topic has too few partitions.
    #[error("the state topic {topic} has no partition {partition} (input {input} has it): give it at least as many partitions as the largest input topic")]
    MissingPartition {
        /// The state topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The input topic.
        input: String,
    },
    /// The time ran out.
    #[error(
        "reading the state topic {topic} took longer than state.restore_timeout_s ({seconds} s)"
    )]
    Timeout {
        /// The state topic.
        topic: String,
        /// The timeout.
        seconds: u64,
    },
}

/// What a restore read.
#[derive(Debug, Default)]
pub struct Restored {
    /// The latest checkpoint of each entity whose latest sample came from an
    /// assigned partition.
    pub checkpoints: Vec<Checkpoint>,
    /// Records that could not be decoded (their entities warm up again).
    pub unreadable: usize,
    /// Records of another consumer group, left alone.
    pub other_group: usize,
    /// Records read.
    pub records: usize,
}

/// The restore reader's configuration: the daemon's consumer settings,
/// without group membership or commits.
pub fn restore_config(config: &DaemonConfig) -> ClientConfig {
    let mut client = super::clients::consumer_config(config);
    client
        .set(
            "group.id",
            format!("{}-state-restore", config.kafka.group_id),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .remove("statistics.interval.ms");
    client
}

/// Reads the checkpoints of the entities of `assigned` input partitions from
/// the same-numbered partitions of `topic`, up to their current end.
pub fn read(
    client: &ClientConfig,
    topic: &str,
    group: &str,
    assigned: &[Partition],
    timeout: Duration,
) -> Result<Restored, RestoreError> {
    let deadline = Instant::now() + timeout;
    let kafka = |source| RestoreError::Kafka {
        topic: topic.to_string(),
        source,
    };
    let consumer: BaseConsumer = client.create().map_err(kafka)?;
    let metadata = consumer
        .fetch_metadata(
            Some(topic),
            deadline.saturating_duration_since(Instant::now()),
        )
        .map_err(kafka)?;
    let available = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32);
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for input in assigned {
        if input.partition >= available {
            return Err(RestoreError::MissingPartition {
                topic: topic.to_string(),
                partition: input.partition,
                input: input.topic.to_string(),
            });
        }
        if ends.contains_key(&input.partition) {
            continue;
        }
        let (low, high) = consumer
            .fetch_watermarks(
                topic,
                input.partition,
                deadline.saturating_duration_since(Instant::now()),
            )
            .map_err(kafka)?;
        if high > low {
            ends.insert(input.partition, high);
        }
    }
    let mut restored = Restored::default();
    if ends.is_empty() {
        return Ok(restored);
    }
    let mut list = TopicPartitionList::new();
    for &partition in ends.keys() {
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .map_err(kafka)?;
    }
    consumer.assign(&list).map_err(kafka)?;
    // The latest value per entity; `None` is a tombstone (evicted).
    let mut latest: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    // Past the ends, whatever has already arrived is read too: a broker may
    // report a partition's end short of its last batch (tansu 0.6 reports
    // that batch's first offset), and a newer checkpoint must not be missed.
    let mut past_ends = false;
    loop {
        if Instant::now() >= deadline {
            return Err(RestoreError::Timeout {
                topic: topic.to_string(),
                seconds: timeout.as_secs(),
            });
        }
        past_ends |= ends.is_empty();
        let wait = if past_ends {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(100)
        };
        let Some(message) = consumer.poll(wait) else {
            if past_ends {
                break;
            }
            continue;
        };
        let message = message.map_err(kafka)?;
        restored.records += 1;
        if group_of(&message).is_some_and(|writer| writer != group.as_bytes()) {
            restored.other_group += 1;
        } else if let Some(key) = message.key() {
            latest.insert(key.to_vec(), message.payload().map(<[u8]>::to_vec));
        }
        if ends
            .get(&message.partition())
            .is_some_and(|&end| message.offset() + 1 >= end)
        {
            ends.remove(&message.partition());
        }
    }
    restored.take_latest(latest, assigned);
    Ok(restored)
}

impl Restored {
    /// Takes in the latest record of each entity (`None`: a tombstone)
    /// whose latest sample came from an `assigned` partition; counts the
    /// ones that cannot be decoded.
    pub fn take_latest(
        &mut self,
        latest: HashMap<Vec<u8>, Option<Vec<u8>>>,
        assigned: &[Partition],
    ) {
        for (key, value) in latest {
            let Some(value) = value else { continue };
            match Checkpoint::decode(&value) {
                Ok(checkpoint) => {
                    if assigned.iter().any(|p| {
                        *p.topic == checkpoint.topic && p.partition == checkpoint.partition
                    }) {
                        self.checkpoints.push(checkpoint);
                    }
                }
                Err(error) => {
                    self.unreadable += 1;
                    tracing::error!(entity = %String::from_utf8_lossy(&key), %error, "a checkpoint cannot be restored; the entity warms up again");
                }
            }
        }
    }
}

/// The consumer group a checkpoint record names, if it names one.
fn group_of<'a>(message: &'a rdkafka::message::BorrowedMessage<'_>) -> Option<&'a [u8]> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|header| header.key == GROUP_HEADER)
        .and_then(|header| header.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectorConfig;
    use crate::serve::embedded::default_scorer;

    #[test]
    fn epochs_settle_only_when_every_earlier_output_of_the_partition_is_acknowledged() {
        let on = |partition: i32| {
            vec![
                crate::daemon::ledger::LedgerBatch::detached().hold(&SourceOffset {
                    partition: Partition {
                        topic: "in".into(),
                        partition,
                    },
                    offset: 7,
                }),
            ]
        };
        let epochs = Epochs::default();
        let a = epochs.register(&on(0));
        let other = epochs.register(&on(1));
        let closed = epochs.close();
        let b = epochs.register(&on(0));
        assert_eq!((a, other, closed, b), (0, 0, 0, 1));
        assert!(!epochs.settled(0, &on(0)));
        epochs.settle(b, &on(0));
        assert!(
            !epochs.settled(0, &on(0)),
            "a later output does not settle an earlier epoch"
        );
        epochs.settle(a, &on(0));
        assert!(epochs.settled(0, &on(0)) && epochs.settled(1, &on(0)));
        // Partition 1's output still in flight holds back partition 1 and
        // tombstones (no holds), not partition 0.
        assert!(!epochs.settled(0, &on(1)));
        assert!(!epochs.settled(0, &[]));
        epochs.settle(other, &on(1));
        assert!(epochs.settled(0, &on(1)) && epochs.settled(0, &[]));
        let c = epochs.register(&on(0));
        assert!(!epochs.settled(1, &on(0)) && epochs.settled(0, &on(0)));
        epochs.settle(c, &on(0));
    }

    #[test]
    fn a_checkpoint_round_trips_and_restores_the_same_decisions() {
        let scorer = default_scorer().unwrap();
        let channels = scorer.metadata().channels.len();
        let config = DetectorConfig::default();
        let mut original = EntityDetector::new("pump-1", &scorer, &config);
        let row = |i: usize| -> Vec<f32> {
            (0..channels)
                .map(|c| 50.0 + ((i * (c + 3)) % 17) as f32 + if i == 260 { 40.0 } else { 0.0 })
                .collect()
        };
        for i in 0..200 {
            original.observe(&scorer, 1000 * i as i64, &row(i)).unwrap();
        }
        let through = SourceOffset {
            partition: Partition {
                topic: "in".into(),
                partition: 3,
            },
            offset: 199,
        };
        let bytes = encode(
            "pump-1",
            &through,
            199_000,
            scorer.model_version(),
            &original,
        );
        let restored = Checkpoint::decode(&bytes).unwrap();
        assert_eq!(
            (
                restored.entity.as_str(),
                restored.partition,
                restored.through_offset
            ),
            ("pump-1", 3, 199)
        );
        let mut copy = restored.detector;
        let fresh = EntityDetector::new("pump-1", &scorer, &config);
        assert!(copy.adopt_settings(fresh).unwrap().is_empty());
        // Bit-identical scores and the same alerts from here on.
        for i in 200..320 {
            let a = original.observe(&scorer, 1000 * i as i64, &row(i)).unwrap();
            let b = copy.observe(&scorer, 1000 * i as i64, &row(i)).unwrap();
            assert_eq!(a, b, "row {i}");
        }
    }

    /// What a checkpoint of the default model's entity may take at most:
    /// the window buffer (channels × window × 4 bytes, as MessagePack
    /// floats) plus the rest (ranges, calibration history in blocks, novelty
    /// gate, alert state), whatever the entity's age.
    fn checkpoint_bound(channels: usize, window_len: usize) -> usize {
        channels * window_len * 5 + 4096
    }

    #[test]
    fn a_checkpoint_is_bounded_and_stops_growing_once_its_history_is_full() {
        let scorer = default_scorer().unwrap();
        let metadata = scorer.metadata();
        let channels = metadata.channels.len();
        let config = DetectorConfig::default();
        let mut detector = EntityDetector::new("pump-1", &scorer, &config);
        let through = SourceOffset {
            partition: Partition {
                topic: "in".into(),
                partition: 0,
            },
            offset: 0,
        };
        let mut sizes = Vec::new();
        // Past a full calibration history (8,640 scores by default).
        for i in 0..12_000usize {
            let row: Vec<f32> = (0..channels)
                .map(|c| 50.0 + ((i * (c + 3)) % 17) as f32 + ((i / 7) % 5) as f32)
                .collect();
            detector.observe(&scorer, 1000 * i as i64, &row).unwrap();
            if i % 1_000 == 999 {
                let bytes = encode("pump-1", &through, 0, scorer.model_version(), &detector);
                sizes.push(bytes.len());
            }
        }
        let bound = checkpoint_bound(channels, metadata.window_len);
        println!("checkpoint bytes every 1,000 rows: {sizes:?} (bound {bound})");
        assert!(sizes.iter().all(|&n| n <= bound), "{sizes:?} > {bound}");
        let full = sizes[9..].iter();
        let (low, high) = (full.clone().min().unwrap(), full.max().unwrap());
        assert!(
            high - low <= 64,
            "still growing at a full history: {sizes:?}"
        );
    }

    #[test]
    fn other_formats_and_garbage_are_refused_with_a_reason() {
        let error = Checkpoint::decode(b"\x01\x02garbage").unwrap_err();
        assert!(error.contains("not a checkpoint"), "{error}");
        #[derive(Serialize)]
        struct Future {
            format_version: u32,
        }
        let bytes = rmp_serde::to_vec_named(&Future { format_version: 9 }).unwrap();
        let error = Checkpoint::decode(&bytes).unwrap_err();
        assert!(error.contains("format 9"), "{error}");
    }

    #[test]
    fn changed_settings_restart_only_what_they_affect() {
        let scorer = default_scorer().unwrap();
        let config = DetectorConfig::default();
        let mut detector = EntityDetector::new("e", &scorer, &config);
        let mut changed = config.clone();
        changed.novelty_rows = 7;
        changed.alerts.threshold = 0.6;
        let reset = detector
            .adopt_settings(EntityDetector::new("e", &scorer, &changed))
            .unwrap();
        assert_eq!(reset, vec!["novelty gate"]);
        assert_eq!(detector.alerts().policy().threshold, 0.6);
        let mut other = config.clone();
        other.calibration = crate::calibrate::CalibrationConfig::Spot(Default::default());
        let reset = detector
            .adopt_settings(EntityDetector::new("e", &scorer, &other))
            .unwrap();
        assert_eq!(reset, vec!["calibration", "novelty gate"]);
    }
}
