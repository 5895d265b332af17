//! The daemon's Prometheus metrics, in one explicit registry (no globals).
//!
//! Labels take values from fixed sets only (reason, event, severity, output,
//! cause, result) or from the assignment (topic, partition): never an entity
//! or anything read from a record. `README.md`, "Metrics", lists them all.

use super::decode::RejectReason;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the daemon exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Records read from the input topics.
    pub records_consumed: IntCounter,
    /// Records decoded into samples.
    pub records_decoded: IntCounter,
    /// Records set aside, by reason.
    pub records_rejected: IntCounterVec,
    /// Windows scored.
    pub windows_scored: IntCounter,
    /// Calibrated score of every window.
    pub window_score: Histogram,
    /// Alert events produced, by event and severity.
    pub alert_events: IntCounterVec,
    /// Alerts open now, by severity.
    pub alerts_open: IntGaugeVec,
    /// Gaps that reset an entity's window.
    pub gaps: IntCounter,
    /// Windows per model call.
    pub scorer_batch_size: Histogram,
    /// Seconds per model call.
    pub scorer_batch_seconds: Histogram,
    /// Seconds from a record's Kafka timestamp to its alert's acknowledgement.
    pub end_to_end_seconds: Histogram,
    /// Consumer lag per assigned partition.
    pub consumer_lag: IntGaugeVec,
    /// Entities held.
    pub entities_active: IntGauge,
    /// Entities whose calibration is still warming up.
    pub entities_warming: IntGauge,
    /// Entities evicted, by cause (ttl, cap).
    pub entities_evicted: IntCounterVec,
    /// Messages acknowledged by the broker, by output (alerts, scores, dead_letter).
    pub produced: IntCounterVec,
    /// Produce attempts that failed and were retried, by output.
    pub produce_retries: IntCounterVec,
    /// Outputs refused for their content, by output.
    pub outputs_refused: IntCounterVec,
    /// Offset commits, by result (ok, error).
    pub commits: IntCounterVec,
    /// Model reloads, by result (ok, refused).
    pub model_reloads: IntCounterVec,
    /// Always 1, labelled with the serving model's version.
    pub model_info: IntGaugeVec,
    /// 1 when /readyz would answer 200.
    pub ready: IntGauge,
    /// Entity checkpoints read back on assignment, by outcome.
    pub state_restored: IntCounterVec,
    /// Replayed samples skipped because a restored checkpoint holds them.
    pub samples_already_checkpointed: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        // 15 and 30 ms too, so that a p99 near a 20 ms objective reads
        // closer than "between 10 and 50".
        let latency_buckets = vec![
            0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
            30.0,
        ];
        let metrics = Self {
            records_consumed: counter(
                "anomalyd_records_consumed_total",
                "Records read from the input topics.",
            ),
            records_decoded: counter(
                "anomalyd_records_decoded_total",
                "Records decoded into samples.",
            ),
            records_rejected: counter_vec(
                "anomalyd_records_rejected_total",
                "Records set aside to the dead-letter topic, by reason.",
                &["reason"],
            ),
            windows_scored: counter("anomalyd_windows_scored_total", "Windows scored by the model."),
            window_score: histogram(
                "anomalyd_window_score",
                "Calibrated score of each scored window (0 while warming up).",
                (1..=20).map(|i| i as f64 * 0.05).collect(),
            ),
            alert_events: counter_vec(
                "anomalyd_alert_events_total",
                "Alert events produced, by event (opened, updated, resolved) and severity.",
                &["event", "severity"],
            ),
            alerts_open: gauge_vec(
                "anomalyd_alerts_open",
                "Alerts open now (opened, not yet resolved), by severity.",
                &["severity"],
            ),
            gaps: counter(
                "anomalyd_gaps_total",
                "Gaps in an entity's event time longer than windows.max_gap_ms (its window restarts).",
            ),
            scorer_batch_size: histogram(
                "anomalyd_scorer_batch_size",
                "Windows per model call.",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
            scorer_batch_seconds: histogram(
                "anomalyd_scorer_batch_seconds",
                "Seconds per model call.",
                latency_buckets.clone(),
            ),
            end_to_end_seconds: histogram(
                "anomalyd_end_to_end_latency_seconds",
                "Seconds from the Kafka timestamp of the record that completed a window to the broker's acknowledgement of its alert event.",
                latency_buckets,
            ),
            consumer_lag: gauge_vec(
                "anomalyd_consumer_lag",
                "Records between the consumer's position and the end of each assigned partition.",
                &["topic", "partition"],
            ),
            entities_active: gauge("anomalyd_entities_active", "Entities held in memory."),
            entities_warming: gauge(
                "anomalyd_entities_warming",
                "Entities whose calibration is still warming up (no alerts yet).",
            ),
            entities_evicted: counter_vec(
                "anomalyd_entities_evicted_total",
                "Entities dropped, by cause (ttl: idle too long; cap: windows.max_entities reached).",
                &["cause"],
            ),
            produced: counter_vec(
                "anomalyd_produced_total",
                "Messages acknowledged by the broker, by output (alerts, scores, dead_letter, state).",
                &["output"],
            ),
            produce_retries: counter_vec(
                "anomalyd_produce_retries_total",
                "Failed produce attempts that were tried again (a delivery that failed, or a message the producer could not take), by output.",
                &["output"],
            ),
            outputs_refused: counter_vec(
                "anomalyd_outputs_refused_total",
                "Outputs the producer or the broker refused for their content (too large, invalid), by output: dead letters, scores and alerts go to the dead-letter topic as a reference (source, size, first bytes); a checkpoint is dropped and the entity checkpointed again later.",
                &["output"],
            ),
            commits: counter_vec(
                "anomalyd_offset_commits_total",
                "Offset commits, by result (ok, error).",
                &["result"],
            ),
            model_reloads: counter_vec(
                "anomalyd_model_reloads_total",
                "Model reloads, by result (ok; refused: the old model keeps serving).",
                &["result"],
            ),
            model_info: gauge_vec(
                "anomalyd_model_info",
                "Always 1; the label names the model version serving.",
                &["version"],
            ),
            ready: gauge("anomalyd_ready", "1 when /readyz answers 200, else 0."),
            state_restored: counter_vec(
                "anomalyd_state_restored_total",
                "Entity checkpoints read back when partitions were assigned, by outcome (restored; refused: another window shape; unreadable; other_group: written by another consumer group, not restored).",
                &["outcome"],
            ),
            samples_already_checkpointed: counter(
                "anomalyd_samples_already_checkpointed_total",
                "Replayed samples skipped because the entity's restored checkpoint already holds them.",
            ),
            registry,
        };
        for reason in RejectReason::ALL {
            metrics
                .records_rejected
                .with_label_values(&[reason.as_str()]);
        }
        for outcome in ["restored", "refused", "unreadable", "other_group"] {
            metrics.state_restored.with_label_values(&[outcome]);
        }
        for output in ["alerts", "scores", "dead_letter", "state"] {
            metrics.produced.with_label_values(&[output]);
            metrics.produce_retries.with_label_values(&[output]);
            metrics.outputs_refused.with_label_values(&[output]);
        }
        for event in ["opened", "updated", "resolved"] {
            for severity in ["warning", "critical"] {
                metrics.alert_events.with_label_values(&[event, severity]);
            }
        }
        for severity in ["warning", "critical"] {
            metrics.alerts_open.with_label_values(&[severity]);
        }
        for cause in ["ttl", "cap"] {
            metrics.entities_evicted.with_label_values(&[cause]);
        }
        for result in ["ok", "error"] {
            metrics.commits.with_label_values(&[result]);
        }
        for result in ["ok", "refused"] {
            metrics.model_reloads.with_label_values(&[result]);
        }
        metrics
    }

    /// Marks `version` as the serving model (removing the previous one).
    pub fn set_model_version(&self, version: &str) {
        self.model_info.reset();
        self.model_info.with_label_values(&[version]).set(1);
    }

    /// The registry in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
