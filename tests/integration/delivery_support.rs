//! Shared by the daemon and fault tests: the synthetic input produced one
//! series per partition, the windows it must yield, and the delivery checks
//! (every committed window's outputs already acknowledged).

use super::kafka_support::*;
use anomalyd::demo::feed::record_json;
use anomalyd::series::Series;
use anomalyd::synthetic::{generate, SyntheticConfig, SyntheticData};
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use std::collections::BTreeSet;
use std::time::Duration;

/// The default model's window length (64 samples).
pub const WINDOW: usize = 64;

/// The synthetic data set (6 machines, 2,688 rows each, anomalies in the second half).
pub fn data() -> SyntheticData {
    generate(&SyntheticConfig::default())
}

/// The topics of a daemon test: `input` and the state topic with
/// `input_partitions`, one partition for each other output.
pub fn all_topics(input_partitions: i32) -> Vec<(&'static str, i32)> {
    vec![
        ("input", input_partitions),
        ("anomalyd-state", input_partitions),
        ("alerts", 1),
        ("scores", 1),
        ("dead-letters", 1),
    ]
}

/// Produces each series to its own partition (series i → partition i), in
/// order, so the offset of row r is r.
pub fn produce_series(brokers: &str, series: &[&Series]) {
    let longest = series.iter().map(|s| s.len()).max().unwrap_or(0);
    produce_rows(brokers, series, 0..longest, usize::MAX, Duration::ZERO);
}

/// Produces the first half of the rows of every series (as
/// [`produce_series`] does) and returns the rows left, for
/// [`produce_the_rest`] once the test has set the scene.
pub fn produce_first_half(brokers: &str, series: &[&Series]) -> std::ops::Range<usize> {
    let longest = series.iter().map(|s| s.len()).max().unwrap_or(0);
    let half = longest / 2;
    produce_rows(brokers, series, 0..half, usize::MAX, Duration::ZERO);
    half..longest
}

/// Produces `rest`, the rows [`produce_first_half`] left.
pub fn produce_the_rest(brokers: &str, series: &[&Series], rest: std::ops::Range<usize>) {
    produce_rows(brokers, series, rest, usize::MAX, Duration::ZERO);
}

/// Like [`produce_series`], but in a thread, pausing `pause` every `every`
/// rows, so faults and membership changes land mid-stream.
pub fn stream_series(
    brokers: &str,
    series: &[&Series],
    every: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    stream_series_with(producer(brokers), series, every, pause)
}

/// [`stream_series`] through `producer` (for example
/// [`one_record_per_batch_producer`]).
pub fn stream_series_with(
    producer: ThreadedProducer<DefaultProducerContext>,
    series: &[&Series],
    every: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    let owned: Vec<Series> = series.iter().map(|s| (*s).clone()).collect();
    std::thread::spawn(move || {
        let borrowed: Vec<&Series> = owned.iter().collect();
        let longest = borrowed.iter().map(|s| s.len()).max().unwrap_or(0);
        send_rows(&producer, &borrowed, 0..longest, every, pause);
    })
}

/// Sends rows `rows` of every series (series i → partition i), row after
/// row, pausing `pause` every `every` rows.
pub fn produce_rows(
    brokers: &str,
    series: &[&Series],
    rows: std::ops::Range<usize>,
    every: usize,
    pause: Duration,
) {
    send_rows(&producer(brokers), series, rows, every, pause);
}

fn send_rows(
    producer: &ThreadedProducer<DefaultProducerContext>,
    series: &[&Series],
    rows: std::ops::Range<usize>,
    every: usize,
    pause: Duration,
) {
    for row in rows {
        for (p, s) in series.iter().enumerate() {
            if row < s.len() {
                send(
                    producer,
                    "input",
                    p as i32,
                    &s.entity,
                    record_json(s, row).as_bytes(),
                );
            }
        }
        if row % every == 0 && !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    flush(producer);
}

/// (partition, offset) of every record that completes a window (stride 1).
pub fn expected_windows(series: &[&Series]) -> BTreeSet<(i32, i64)> {
    series
        .iter()
        .enumerate()
        .flat_map(|(p, s)| (WINDOW - 1..s.len()).map(move |r| (p as i32, r as i64)))
        .collect()
}

/// The input (partition, offset) an output message names in its `source`.
pub fn source_of(message: &serde_json::Value) -> (i32, i64) {
    (
        message["source"]["partition"].as_i64().unwrap() as i32,
        message["source"]["offset"].as_i64().unwrap(),
    )
}

/// The input (partition, offset) of every score message read so far.
pub fn score_sources(scores: &TopicReader) -> Vec<(i32, i64)> {
    scores.json().iter().map(source_of).collect()
}

/// What the alerts topic held when a commit was observed.
pub struct CommitSnapshot {
    /// Committed offsets per partition.
    pub committed: Vec<i64>,
    /// (partition, offset, event) of the alerts on the topic then.
    pub alerts: BTreeSet<(i32, i64, String)>,
}

/// The (partition, offset, event) of every alert message read so far.
pub fn alert_keys(alerts: &TopicReader) -> BTreeSet<(i32, i64, String)> {
    alerts
        .json()
        .iter()
        .map(|m| {
            let (partition, offset) = source_of(m);
            (partition, offset, m["event"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Watches committed offsets while the daemon runs: each time a commit is
/// seen, every window completed by a record before the committed offset must
/// already be readable on the scores topic (acknowledged). The alerts topic
/// is snapshotted at the same moment, for [`check_alert_snapshots`]. Stops
/// when `until` (given the scores read and the offsets just checked) says
/// so. Returns the snapshots.
pub fn check_commits_never_pass_unacknowledged_outputs(
    brokers: &str,
    group: &str,
    partitions: i32,
    expected: &BTreeSet<(i32, i64)>,
    scores: &mut TopicReader,
    alerts: &mut TopicReader,
    until: impl Fn(&TopicReader, &[i64]) -> bool,
) -> Vec<CommitSnapshot> {
    let mut snapshots = Vec::new();
    let mut last = vec![-1; partitions as usize];
    let offsets = CommittedOffsets::new(brokers, group);
    loop {
        let committed = offsets.read("input", partitions);
        if committed != last {
            scores.catch_up();
            alerts.catch_up();
            let seen: BTreeSet<_> = score_sources(scores).into_iter().collect();
            for &(p, offset) in expected {
                if offset < committed[p as usize] {
                    assert!(
                        seen.contains(&(p, offset)),
                        "offset {} of partition {p} is committed but the score of the window it completes (offset {offset}) is not acknowledged",
                        committed[p as usize]
                    );
                }
            }
            snapshots.push(CommitSnapshot {
                committed: committed.clone(),
                alerts: alert_keys(alerts),
            });
            last = committed;
        }
        if until(scores, &last) {
            return snapshots;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Every alert in the final alerts topic whose source record lies before a
/// commit observed earlier must already have been on the topic at that moment.
/// Returns the number of (snapshot, alert) pairs checked.
pub fn check_alert_snapshots(
    snapshots: &[CommitSnapshot],
    all_alerts: &BTreeSet<(i32, i64, String)>,
) -> usize {
    let mut checked = 0;
    for snapshot in snapshots {
        for alert in all_alerts {
            let (p, offset, _) = alert;
            if *offset < snapshot.committed[*p as usize] {
                assert!(
                    snapshot.alerts.contains(alert),
                    "offset {} of partition {p} was committed before the alert {alert:?} derived from offset {offset} was acknowledged",
                    snapshot.committed[*p as usize]
                );
                checked += 1;
            }
        }
    }
    checked
}

/// What a daemon test starts from: a broker with the daemon's topics
/// ([`all_topics`]) and a scratch folder for the daemons' configs and logs.
pub struct Scenario {
    /// The broker.
    pub broker: Broker,
    /// The scratch folder.
    pub dir: tempfile::TempDir,
}

impl Scenario {
    /// A broker whose `input` (and state) topic has `input_partitions`.
    pub fn new(input_partitions: i32) -> Self {
        Self {
            broker: start_broker(&all_topics(input_partitions)),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts a daemon `name` in consumer group `group`, with the `extra`
    /// config tables ([`DaemonProcess::launch`]).
    pub fn launch(&self, name: &str, group: &str, extra: &str) -> DaemonProcess {
        DaemonProcess::launch(self.dir.path(), &self.broker.brokers, name, group, extra)
    }

    /// A reader of the one-partition output topic `topic`.
    pub fn reader(&self, topic: &str) -> TopicReader {
        TopicReader::new(&self.broker.brokers, topic, 1)
    }
}
