//! The daemon's Prometheus metrics, in one explicit registry (no globals).
//!
//! Labels take values from fixed sets only (reason, event, severity, output,
//! cause, result) or from the assignment (topic, partition): never an entity
//! or anything read from a record. `README.md`, "Metrics", lists them all.

use crate::daemon::source::decode::RejectReason;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Declares each metric once: its field, documentation, type and how it
/// is made (one of the constructors below, registered in `registry`).
macro_rules! metrics {
    ($($(#[doc = $doc:literal])* $field:ident: $type:ty = $make:ident($($arg:expr),* $(,)?);)*) => {
        /// Every metric the daemon exports.
        #[derive(Clone)]
        pub struct Metrics {
            registry: Registry,
            $($(#[doc = $doc])* pub $field: $type,)*
        }

        impl Metrics {
            fn register(registry: Registry) -> Self {
                Self {
                    $($field: $make(&registry, $($arg),*),)*
                    registry,
                }
            }
        }
    };
}

metrics! {
    /// Records read from the input topics.
    records_consumed: IntCounter = counter(
        "anomalyd_records_consumed_total",
        "Records read from the input topics.",
    );
    /// Records decoded into samples.
    records_decoded: IntCounter = counter(
        "anomalyd_records_decoded_total",
        "Records decoded into samples.",
    );
    /// Samples the decoded records carried (more than the records when
    /// some are in the batch form).
    samples_decoded: IntCounter = counter(
        "anomalyd_samples_decoded_total",
        "Samples the decoded records carried (one per record in the single form).",
    );
    /// Records set aside, by reason.
    records_rejected: IntCounterVec = counter_vec(
        "anomalyd_records_rejected_total",
        "Records set aside to the dead-letter topic, by reason.",
        &["reason"],
    );
    /// Windows scored.
    windows_scored: IntCounter = counter(
        "anomalyd_windows_scored_total",
        "Windows scored by the model.",
    );
    /// Calibrated score of every window.
    calibrated_score: Histogram = histogram(
        "anomalyd_calibrated_score",
        "Calibrated score of each scored window (0 while warming up).",
        (1..=20).map(|i| i as f64 * 0.05).collect(),
    );
    /// Alert events produced, by event and severity.
    alert_events: IntCounterVec = counter_vec(
        "anomalyd_alert_events_total",
        "Alert events produced, by event (opened, updated, resolved) and severity.",
        &["event", "severity"],
    );
    /// Alerts open now, by severity.
    alerts_open: IntGaugeVec = gauge_vec(
        "anomalyd_alerts_open",
        "Alerts open now (opened, not yet resolved), by severity.",
        &["severity"],
    );
    /// Gaps that reset an entity's window.
    gaps: IntCounter = counter(
        "anomalyd_gaps_total",
        "Gaps in an entity's event time longer than windows.max_gap_ms (its window restarts).",
    );
    /// Windows per model call.
    model_batch_size: Histogram = histogram(
        "anomalyd_model_batch_size",
        "Windows per model call.",
        vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
    );
    /// Seconds per model call.
    model_batch_seconds: Histogram = histogram(
        "anomalyd_model_batch_seconds",
        "Seconds per model call.",
        latency_buckets(),
    );
    /// Seconds from a record's Kafka timestamp to its alert's acknowledgement.
    end_to_end_seconds: Histogram = histogram(
        "anomalyd_end_to_end_latency_seconds",
        "Seconds from the Kafka timestamp of the record that completed a window to the broker's acknowledgement of its alert event.",
        latency_buckets(),
    );
    /// Consumer lag per assigned partition.
    consumer_lag: IntGaugeVec = gauge_vec(
        "anomalyd_consumer_lag",
        "Records between the consumer's position and the end of each assigned partition.",
        &["topic", "partition"],
    );
    /// Entities held.
    entities_active: IntGauge = gauge("anomalyd_entities_active", "Entities held in memory.");
    /// Entities whose calibration is still warming up.
    entities_warming: IntGauge = gauge(
        "anomalyd_entities_warming",
        "Entities whose calibration is still warming up (no alerts yet).",
    );
    /// Entities evicted, by cause (ttl, cap).
    entities_evicted: IntCounterVec = counter_vec(
        "anomalyd_entities_evicted_total",
        "Entities dropped, by cause (ttl: idle too long; cap: windows.max_entities reached).",
        &["cause"],
    );
    /// Messages acknowledged by the broker, by output (alerts, scores, dead_letter).
    produced: IntCounterVec = counter_vec(
        "anomalyd_produced_total",
        "Messages acknowledged by the broker, by output (alerts, scores, dead_letter, state).",
        &["output"],
    );
    /// Produce attempts that failed and were retried, by output.
    produce_retries: IntCounterVec = counter_vec(
        "anomalyd_produce_retries_total",
        "Failed produce attempts that were tried again (a delivery that failed, or a message the producer could not take), by output.",
        &["output"],
    );
    /// Outputs refused for their content, by output.
    outputs_refused: IntCounterVec = counter_vec(
        "anomalyd_outputs_refused_total",
        "Outputs the producer or the broker refused for their content (too large, invalid), by output: dead letters, scores and alerts go to the dead-letter topic as a reference (source, size, first bytes); a checkpoint is dropped and the entity checkpointed again later.",
        &["output"],
    );
    /// Offset commits, by result (ok, error).
    commits: IntCounterVec = counter_vec(
        "anomalyd_offset_commits_total",
        "Offset commits, by result (ok, error).",
        &["result"],
    );
    /// Model reloads, by result (ok, refused).
    model_reloads: IntCounterVec = counter_vec(
        "anomalyd_model_reloads_total",
        "Model reloads, by result (ok; refused: the old model keeps serving).",
        &["result"],
    );
    /// Always 1, labelled with the serving model's version.
    model_info: IntGaugeVec = gauge_vec(
        "anomalyd_model_info",
        "Always 1; the label names the model version serving.",
        &["version"],
    );
    /// 1 when /readyz would answer 200.
    ready: IntGauge = gauge("anomalyd_ready", "1 when /readyz answers 200, else 0.");
    /// Entity checkpoints read back on assignment, by outcome.
    state_restored: IntCounterVec = counter_vec(
        "anomalyd_state_restored_total",
        "Entity checkpoints read back when partitions were assigned, by outcome (restored; refused: another window shape; unreadable; other_group: written by another consumer group, not restored).",
        &["outcome"],
    );
    /// Replayed samples skipped because a restored checkpoint holds them.
    samples_already_checkpointed: IntCounter = counter(
        "anomalyd_samples_already_checkpointed_total",
        "Replayed samples skipped because the entity's restored checkpoint already holds them.",
    );
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(registry, metric)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid metric"))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(registry, metric)
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    register(registry, metric)
}

/// Latency buckets: 15 and 30 ms too, so that a p99 near a 20 ms
/// objective reads closer than "between 10 and 50".
fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
        30.0,
    ]
}

impl Metrics {
    /// Creates and registers every metric, each labelled one at zero for
    /// every value its fixed label sets take (so that rates start at 0).
    pub fn new() -> Self {
        let metrics = Self::register(Registry::new());
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
