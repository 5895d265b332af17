//! Step 4 of the end-to-end bench: latency at a steady rate, from a
//! sample's event time (the wall clock when the load generator sends it) to
//! its window's output read back from the scores and alerts topics.

use super::kafka_support::metric_sum_in;
use super::{
    bench_broker, launch_daemon, now_ms, producer, reader, send, wall_ms, DaemonProcess, Records,
    ENTITIES, LATENCY_PARTITIONS,
};
use anomalyd::series::timestamp::parse_timestamp;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::Offset;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a latency run saw: (total, until sent by the daemon) per output, in ms.
pub struct LatencyRun {
    peak_rss_mib: f64,
    scores: Vec<(f64, f64)>,
    alerts: Vec<(f64, f64)>,
    sent: usize,
    max_lag: f64,
    max_unacknowledged: i32,
    /// The daemon's own measure, from its `anomalyd_end_to_end_latency_seconds`
    /// histogram over the same span: alerts acknowledged by the broker, and
    /// the fraction of them acknowledged within 10, 15, 20, 30 and 50 ms of
    /// their record's timestamp.
    acknowledged: AcknowledgedAlerts,
}

/// The alert latency histogram's buckets the bench reads (upper bounds, s).
const ACKNOWLEDGED_WITHIN_S: [&str; 5] = ["0.01", "0.015", "0.02", "0.03", "0.05"];

/// Counts of the daemon's alert latency histogram at one moment.
#[derive(Default, Clone, Copy)]
struct AcknowledgedAlerts {
    count: f64,
    /// NaN where the daemon has no such bucket (builds before 15 and 30 ms
    /// were added).
    within: [f64; 5],
}

impl AcknowledgedAlerts {
    /// From one scrape, so the count and the buckets are of the same moment.
    fn read(daemon: &DaemonProcess) -> Self {
        let name = "anomalyd_end_to_end_latency_seconds";
        let metrics = daemon.metrics_text();
        Self {
            count: metric_sum_in(&metrics, &format!("{name}_count")),
            within: ACKNOWLEDGED_WITHIN_S.map(|le| {
                let bucket = format!("{name}_bucket{{le=\"{le}\"}}");
                if metrics.contains(&bucket) {
                    metric_sum_in(&metrics, &bucket)
                } else {
                    f64::NAN
                }
            }),
        }
    }

    /// What happened between `earlier` and `self`.
    fn since(self, earlier: Self) -> Self {
        Self {
            count: self.count - earlier.count,
            within: std::array::from_fn(|i| self.within[i] - earlier.within[i]),
        }
    }

    fn json(&self) -> String {
        let mut json = format!("\"alerts_acknowledged\": {:.0}", self.count);
        for (le, within) in ACKNOWLEDGED_WITHIN_S.iter().zip(self.within) {
            let ms = (le.parse::<f64>().expect("a bound") * 1000.0).round();
            let fraction = within / self.count;
            if fraction.is_finite() {
                json += &format!(", \"acknowledged_within_{ms}ms\": {fraction:.4}");
            } else {
                json += &format!(", \"acknowledged_within_{ms}ms\": null");
            }
        }
        json
    }
}

impl LatencyRun {
    /// The bench's JSON line for this run of `binary` at `rate` samples/s.
    pub fn json_line(&self, binary: &str, rate: f64, low_latency: bool) -> String {
        format!(
            "{{\"phase\": \"latency\", \"binary\": \"{binary}\", \"samples_per_s\": {rate:.0}, \"samples\": {}, \"max_daemon_lag\": {}, \"max_load_generator_unacknowledged\": {}, \"daemon_peak_rss_mib\": {:.1}, \"low_latency\": {low_latency}, {}, {}, {}}}",
            self.sent,
            self.max_lag,
            self.max_unacknowledged,
            self.peak_rss_mib,
            summary("score", &self.scores),
            summary("alert", &self.alerts),
            self.acknowledged.json(),
        )
    }
}

/// Percentile (0..=100) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// On a fresh broker and daemon (a mock cluster slows down as its
/// partitions fill with message sets), produces at `rate` samples per
/// second for `seconds`, stamping each with the wall clock; returns output
/// latencies (ms) of scores and of alerts whose window ended after the
/// first `settle` seconds.
pub fn latency(
    binary: &Path,
    model: &Path,
    tuning: &str,
    records: &Records,
    rate: f64,
    seconds: f64,
    settle: f64,
) -> LatencyRun {
    let broker = bench_broker(LATENCY_PARTITIONS);
    let brokers = broker.brokers.as_str();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut daemon = launch_daemon(binary, &broker, model, dir.path(), "daemon", tuning);
    daemon.wait_ready(Duration::from_secs(60));
    let stop = Arc::new(AtomicBool::new(false));
    let from_ms = now_ms() + (settle * 1000.0) as i64;
    let readers: Vec<_> = [("scores", LATENCY_PARTITIONS), ("alerts", 4)]
        .into_iter()
        .map(|(topic, partitions)| {
            let consumer = reader(brokers, topic, partitions, Offset::End);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
                        continue;
                    };
                    let received = wall_ms();
                    let Ok(json) = serde_json::from_slice::<serde_json::Value>(
                        message.payload().unwrap_or_default(),
                    ) else {
                        continue;
                    };
                    // The event time of the window's last sample, in ms
                    // (RFC 3339 `window_end` has whole seconds only).
                    let end = json["window_end_ms"]
                        .as_i64()
                        .or_else(|| parse_timestamp(json["window_end"].as_str()?).ok());
                    if let Some(end) = end.filter(|&e| e >= from_ms) {
                        // The daemon's producer stamps the record when it sends it.
                        let sent = message.timestamp().to_millis().unwrap_or(end) as f64;
                        latencies.push((received - end as f64, sent - end as f64));
                    }
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2)); // readers assigned
    let producer = producer(brokers, "5");
    let started = Instant::now();
    let mut sent = 0usize;
    let mut last_ts = vec![0i64; ENTITIES];
    let mut step = 0usize;
    let mut next_report = 1.0;
    let mut max_lag = 0.0f64;
    let mut max_unacknowledged = 0;
    let mut acknowledged_at_settle = None;
    while started.elapsed().as_secs_f64() < seconds {
        if acknowledged_at_settle.is_none() && now_ms() >= from_ms {
            acknowledged_at_settle = Some(AcknowledgedAlerts::read(&daemon));
        }
        if started.elapsed().as_secs_f64() >= next_report {
            next_report += 1.0;
            let lag = daemon.metric_sum("anomalyd_consumer_lag");
            max_lag = max_lag.max(lag);
            max_unacknowledged = max_unacknowledged.max(producer.in_flight_count());
            eprintln!(
                "latency phase: {:.0} s, {sent} sent, {} not yet acknowledged, daemon lag {lag}",
                started.elapsed().as_secs_f64(),
                producer.in_flight_count()
            );
        }
        let due = (started.elapsed().as_secs_f64() * rate) as usize;
        if sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        while sent < due {
            let entity = sent % ENTITIES;
            if entity == 0 {
                step += 1;
            }
            let ts = now_ms().max(last_ts[entity] + 1);
            last_ts[entity] = ts;
            send(
                &producer,
                LATENCY_PARTITIONS,
                entity,
                &records.json(entity, step, ts),
            );
            sent += 1;
        }
    }
    if producer.flush(Duration::from_secs(30)).is_err() {
        eprintln!("the load generator could not deliver everything within 30 s");
    }
    std::thread::sleep(Duration::from_secs(2)); // the last outputs arrive
    let acknowledged =
        AcknowledgedAlerts::read(&daemon).since(acknowledged_at_settle.unwrap_or_default());
    stop.store(true, Ordering::Relaxed);
    let mut results = readers.into_iter().map(|r| r.join().expect("reader"));
    let scores = results.next().unwrap_or_default();
    let alerts = results.next().unwrap_or_default();
    let peak_rss_mib = daemon.peak_rss_bytes().unwrap_or(0) as f64 / 1048576.0;
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(Duration::from_secs(30));
    LatencyRun {
        peak_rss_mib,
        scores,
        alerts,
        sent,
        max_lag,
        max_unacknowledged,
        acknowledged,
    }
}

/// `"name_p50_ms": …, "name_p99_ms": …` of the total latencies and of the
/// part until the daemon sent the output.
fn summary(name: &str, latencies: &[(f64, f64)]) -> String {
    let mut total: Vec<f64> = latencies.iter().map(|l| l.0).collect();
    let mut in_daemon: Vec<f64> = latencies.iter().map(|l| l.1).collect();
    total.sort_by(f64::total_cmp);
    in_daemon.sort_by(f64::total_cmp);
    format!(
        "\"{name}_outputs\": {}, \"{name}_p50_ms\": {:.1}, \"{name}_p99_ms\": {:.1}, \"{name}_max_ms\": {:.1}, \"{name}_sent_by_daemon_p50_ms\": {:.1}, \"{name}_sent_by_daemon_p99_ms\": {:.1}",
        total.len(),
        percentile(&total, 50.0),
        percentile(&total, 99.0),
        total.last().copied().unwrap_or(f64::NAN),
        percentile(&in_daemon, 50.0),
        percentile(&in_daemon, 99.0),
    )
}
