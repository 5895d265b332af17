//! The daemon's pipeline in memory, for tests: records go through the
//! consumer's [`Intake`], the scorer thread's [`ScoringWorker`] (entities,
//! model, decisions, checkpoints) and the [`Sink`] into an in-memory broker
//! ([`MemoryBroker`]), on one thread and with no Kafka. The harness plays
//! the consumer's part around them as `source` does: reading partitions
//! from their committed offsets, committing the ledger's safe positions,
//! handing partitions back (checkpoint, commit, forget) and restoring them
//! from the state topic. A property test drives it through interleavings
//! of reads, deliveries, delivery failures, checkpoints, rebalances and
//! crashes, and checks the at-least-once invariant and that the outputs
//! equal those of an uninterrupted run.

mod messages;
mod property;

use super::config::DaemonConfig;
use super::failure::Stop;
use super::ledger::{Ledger, Partition, SourceOffset};
use crate::daemon::admin::health::Health;
use crate::daemon::admin::metrics::Metrics;
use crate::daemon::scoring::{SampleBatch, ScoringSettings, ScoringWorker, Work};
use crate::daemon::sinks::memory::{Log, MemoryBroker};
use crate::daemon::sinks::{OutputKind, Sink, SinkParts};
use crate::daemon::source::Intake;
use crate::daemon::state::{Restored, GROUP_HEADER};
use crate::serve::Scorer;
use messages::{outputs_of, shown, Message, Messages};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "readings";
const PARTITIONS: i32 = 2;

/// The daemon's settings here (`CHECKPOINTS` is `true` or `false`): the
/// shortest calibration warm-up, so that
/// alerts come early, a stride to keep the model calls few, timed checkpoints off (the
/// test takes them), and a small record limit for a poison record.
const CONFIG: &str = r#"
[kafka]
brokers = "memory"
input_topics = ["readings"]
scores_topic = "scores"

[input]
max_record_bytes = 2048

[windows]
stride = 4

[scoring]
threads = 1

[state]
checkpoint_interval_ms = 3600000
checkpoints = CHECKPOINTS

[detector.calibration]
method = "likelihood"
warm_up = 30
"#;

/// One input record.
#[derive(Debug, Clone)]
struct Record {
    offset: i64,
    key: Vec<u8>,
    payload: Vec<u8>,
    time_ms: i64,
}

/// The input: per partition, its records. Four entities over two
/// partitions, a sine with a little deterministic noise each; one has a
/// spike, one a level shift (so that alerts open, update and resolve); a
/// malformed and an oversized record sit among them (dead letters). One
/// entity sends its samples in the batch form, 7 to a record, one of them
/// a repeat of its predecessor's time (a dead letter of its own).
fn input() -> BTreeMap<i32, Vec<Record>> {
    let start_ms = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let mut partitions: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let channels = ["temperature", "pressure", "flow", "vibration", "power"];
    let mut batched: Vec<(i64, serde_json::Map<String, serde_json::Value>)> = Vec::new();
    for row in 0..400i64 {
        for entity in 0..4i64 {
            let partition = (entity % PARTITIONS as i64) as i32;
            let records = partitions.entry(partition).or_default();
            let time_ms = start_ms + row * 60_000;
            let mut values = serde_json::Map::new();
            for (c, name) in channels.iter().enumerate() {
                let phase = (row as f64 / 12.0 + c as f64 + entity as f64).sin();
                let noise =
                    (((row * 7919 + c as i64 * 104_729 + entity * 31) % 97) as f64 - 48.0) / 480.0;
                let mut value = 10.0 + c as f64 + phase + noise;
                if entity == 1 && row == 250 {
                    value += 40.0;
                }
                if entity == 2 && (300..340).contains(&row) {
                    value += 15.0;
                }
                values.insert((*name).into(), value.into());
            }
            if entity == 3 {
                if row == 200 {
                    batched.push((time_ms, values.clone()));
                }
                batched.push((time_ms, values));
                if batched.len() >= 7 || row == 399 {
                    let payload = batch_record("e3", &channels, &batched);
                    batched.clear();
                    records.push(Record {
                        offset: records.len() as i64,
                        key: b"e3".to_vec(),
                        payload: payload.to_string().into_bytes(),
                        time_ms,
                    });
                }
                continue;
            }
            let payload = serde_json::json!({
                "entity": format!("e{entity}"),
                "ts": time_ms,
                "values": values,
            });
            records.push(Record {
                offset: records.len() as i64,
                key: format!("e{entity}").into_bytes(),
                payload: payload.to_string().into_bytes(),
                time_ms,
            });
            if entity == 0 && row == 120 {
                let offset = records.len() as i64;
                records.push(Record {
                    offset,
                    key: b"e0".to_vec(),
                    payload: b"{not json".to_vec(),
                    time_ms,
                });
                records.push(Record {
                    offset: offset + 1,
                    key: b"e0".to_vec(),
                    payload: vec![b' '; 4096],
                    time_ms,
                });
            }
        }
    }
    partitions
}

/// A record in the batch form: `samples`' times and, per channel, values.
fn batch_record(
    entity: &str,
    channels: &[&str],
    samples: &[(i64, serde_json::Map<String, serde_json::Value>)],
) -> serde_json::Value {
    let values: serde_json::Map<String, serde_json::Value> = channels
        .iter()
        .map(|c| {
            let column = samples.iter().map(|(_, v)| v[*c].clone()).collect();
            ((*c).to_string(), serde_json::Value::Array(column))
        })
        .collect();
    serde_json::json!({
        "entity": entity,
        "ts": samples.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        "values": values,
    })
}

/// [`CONFIG`] with entity checkpoints on or off.
fn settings(checkpoints: bool) -> DaemonConfig {
    let text = CONFIG.replace("CHECKPOINTS", &checkpoints.to_string());
    DaemonConfig::from_toml(&text, "memory.toml", &|_| None).unwrap()
}

fn partition(number: i32) -> Partition {
    Partition {
        topic: TOPIC.into(),
        partition: number,
    }
}

/// One life of the daemon: its ledger, sink, broker connection and scorer
/// thread's worker, and how far it has read each assigned partition.
struct Life {
    broker: Arc<MemoryBroker>,
    sink: Arc<Sink>,
    intake: Intake,
    worker: ScoringWorker,
    /// The next offset to read, per assigned partition.
    reading: BTreeMap<i32, i64>,
}

impl Drop for Life {
    /// A life ends as the daemon stops: what it holds is given up.
    fn drop(&mut self) {
        self.sink.stop().begin();
    }
}

/// The pipeline, its input and output topics and the group's commits.
struct Pipeline {
    config: DaemonConfig,
    scorer: Arc<Scorer>,
    input: BTreeMap<i32, Vec<Record>>,
    log: Log,
    committed: BTreeMap<i32, i64>,
    life: Life,
}

impl Pipeline {
    fn new(scorer: Arc<Scorer>, checkpoints: bool) -> Self {
        let config = settings(checkpoints);
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let life = start_life(&config, &scorer, &log);
        let mut pipeline = Self {
            config,
            scorer,
            input: input(),
            log,
            committed: BTreeMap::new(),
            life,
        };
        pipeline.assign(&(0..PARTITIONS).collect::<Vec<_>>());
        pipeline
    }

    /// Partitions assigned: their checkpoints are read back from the state
    /// topic (latest per entity, of this group) before any of their
    /// records, which are read from the committed offset.
    fn assign(&mut self, partitions: &[i32]) {
        let assigned: Vec<Partition> = partitions.iter().map(|&p| partition(p)).collect();
        let mut latest = HashMap::new();
        for output in self.log.lock().unwrap().iter() {
            let ours = output.headers.iter().any(|(name, value)| {
                name == GROUP_HEADER && *value == self.config.kafka.group_id.as_bytes()
            });
            if output.kind == OutputKind::State && ours {
                latest.insert(output.key.clone().unwrap(), output.payload.clone());
            }
        }
        let mut restored = Restored::default();
        restored.take_latest(latest, &assigned);
        assert_eq!(restored.unreadable, 0);
        if !restored.checkpoints.is_empty() {
            self.life.worker.handle(Work::Restore(restored.checkpoints));
        }
        for &p in partitions {
            let from = self.committed.get(&p).copied().unwrap_or(0);
            self.life.reading.insert(p, from);
        }
    }

    /// Reads up to `count` records of partition `p` (if assigned) and
    /// hands their samples to the worker, as the consumer loop does.
    fn read(&mut self, p: i32, count: usize) {
        let Some(next) = self.life.reading.get_mut(&p) else {
            return;
        };
        let records = &self.input[&p];
        let mut batch = SampleBatch::default();
        for record in records.iter().skip(*next as usize).take(count) {
            let source = SourceOffset {
                partition: partition(p),
                offset: record.offset,
            };
            *next = record.offset + 1;
            let now_ms = record.time_ms;
            if let Some(taken) =
                self.life
                    .intake
                    .take(source, Some(&record.key), Some(&record.payload), now_ms)
            {
                batch.push(
                    taken,
                    Some(record.time_ms),
                    Some(&record.key),
                    &record.payload,
                );
            }
        }
        if !batch.is_empty() {
            self.life.worker.handle(Work::Samples(batch));
        }
        self.life.worker.tend(true);
    }

    /// Commits each assigned partition's safe position, after checking that
    /// it passes no record with an alert, score or dead letter sent and not
    /// yet acknowledged (as the broker saw them) and, with checkpoints, no
    /// record whose outputs in the uninterrupted run (`required`) are not
    /// all in the log.
    fn commit(&mut self, required: &BTreeMap<SourceOffset, BTreeSet<Message>>) {
        let ledger = self.life.sink.ledger().clone();
        let unacknowledged = self.life.broker.unacknowledged();
        let outputs = outputs_of(&self.log);
        let delivered = Messages::of(outputs.iter().map(|(_, m)| m));
        for &p in self.life.reading.keys() {
            let Some(position) = ledger.position(&partition(p)) else {
                continue;
            };
            let before = |source: &SourceOffset| {
                source.partition == partition(p) && source.offset < position
            };
            if let Some(source) = unacknowledged.iter().find(|s| before(s)) {
                panic!(
                    "partition {p} committed at {position}, past offset {} whose output is not acknowledged",
                    source.offset
                );
            }
            if self.config.state.checkpoints {
                for (source, messages) in required.iter().filter(|(s, _)| before(s)) {
                    for message in messages {
                        assert!(
                            delivered.contains(message),
                            "partition {p} committed at {position}, past offset {} whose output in the uninterrupted run is not in the log: {}",
                            source.offset,
                            shown(message)
                        );
                    }
                }
            }
            self.committed.insert(p, position);
        }
    }

    /// Partition `p` revoked, with no time to wait: what is queued is
    /// scored, checkpoints are staged (sent only if already settled), the
    /// position is committed, and the partition is forgotten.
    fn revoke(&mut self, p: i32, required: &BTreeMap<SourceOffset, BTreeSet<Message>>) {
        if !self.life.reading.contains_key(&p) {
            return;
        }
        let (done, finished) = crossbeam_channel::bounded(1);
        self.life
            .worker
            .handle(Work::Revoke(vec![partition(p)], Instant::now(), done));
        let dropped = finished.try_recv().expect("the worker answers a revoke");
        self.commit(required);
        self.life.sink.ledger().forget(&[partition(p)], dropped);
        self.life.reading.remove(&p);
    }

    /// The process dies: outputs in flight land or are lost (`landed`, by
    /// their position), the rest of the life's state is gone; a new life
    /// starts and is assigned every partition.
    fn crash(&mut self, landed: u64) {
        for source in self.life.broker.unacknowledged() {
            let committed = self.committed.get(&source.partition.partition);
            assert!(
                committed.is_none_or(|&c| c <= source.offset),
                "an output of offset {} is lost in a crash, but {:?} is committed",
                source.offset,
                committed
            );
        }
        self.life
            .broker
            .crash(|position| (landed >> (position % 64)) & 1 == 1);
        self.life = start_life(&self.config, &self.scorer, &self.log);
        self.assign(&(0..PARTITIONS).collect::<Vec<_>>());
    }

    /// Sends failed outputs again (no back-off here) and tends the worker.
    fn resend(&mut self) {
        self.life.sink.resend_failed();
        self.life.worker.tend(true);
    }

    /// Reads everything left and acknowledges every output, with a final
    /// checkpoint and commit.
    fn finish(&mut self, required: &BTreeMap<SourceOffset, BTreeSet<Message>>) {
        let revoked: Vec<i32> = (0..PARTITIONS)
            .filter(|p| !self.life.reading.contains_key(p))
            .collect();
        self.assign(&revoked);
        for p in 0..PARTITIONS {
            self.read(p, usize::MAX);
        }
        self.life.worker.checkpoint(None);
        for _ in 0..100 {
            self.life.broker.acknowledge_all();
            self.resend();
            if self.life.broker.in_flight() == 0 && !self.life.sink.retries_pending() {
                break;
            }
        }
        assert_eq!(self.life.broker.in_flight(), 0, "outputs left in flight");
        self.commit(required);
    }
}

fn start_life(config: &DaemonConfig, scorer: &Arc<Scorer>, log: &Log) -> Life {
    let metrics = Metrics::new();
    let health = Arc::new(Health::new(Duration::from_secs(60)));
    let broker = MemoryBroker::new(log.clone());
    let parts = SinkParts {
        ledger: Ledger::default(),
        metrics: metrics.clone(),
        health: health.clone(),
        stop: Arc::new(Stop::new(Duration::from_secs(5))),
        dead_letter_topic: config.kafka.dead_letter_topic.clone(),
    };
    let sink = Arc::new(
        parts
            .build(|_| Duration::ZERO, |reports| Ok(broker.transport(reports)))
            .unwrap(),
    );
    let intake = Intake::new(
        &config.input,
        &scorer.metadata().channels,
        sink.clone(),
        metrics.clone(),
    );
    let worker = ScoringWorker::new(
        ScoringSettings::of(config),
        scorer.clone(),
        sink.clone(),
        metrics,
        health,
    );
    Life {
        broker,
        sink,
        intake,
        worker,
        reading: BTreeMap::new(),
    }
}
