//! The producers' delivery reports: an acknowledged output releases its
//! holds and settles its epoch; a failed one goes by its error's class.

use super::{Output, OutputKind};
use crate::daemon::admin::health::{any_broker_up, Health, KafkaClient};
use crate::daemon::admin::metrics::Metrics;
use crate::daemon::failure::{classify_error, report_client_error, ErrorClass, Fatal, Stop};
use crate::daemon::ledger::{abandon_all, Ledger};
use crate::daemon::state::Epochs;
use crate::daemon::throttle::Throttle;
use crossbeam_channel::Sender;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::sync::Arc;
use std::time::Instant;

/// Delivery reports: release on success; on failure, by the error's class
/// ([`classify`](crate::daemon::failure::classify)): send again after a back-off, set aside, or stop.
pub struct DeliveryReports {
    /// Which producer these reports are of.
    pub(super) client: KafkaClient,
    pub(super) ledger: Ledger,
    pub(super) metrics: Metrics,
    pub(super) health: Arc<Health>,
    pub(super) epochs: Arc<Epochs>,
    pub(super) stop: Arc<Stop>,
    pub(super) retry: Sender<Box<Output>>,
    pub(super) failed_checkpoints: Sender<Box<Output>>,
    /// "Delivery failed" lines.
    pub(super) failures: Throttle,
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
    pub(super) fn delivered(&self, output: Box<Output>) {
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
        self.epochs.settle(output.epoch, &output.holds);
        self.ledger.release_all(output.holds);
        self.health.output_delivered(self.client);
    }

    pub(super) fn failed(&self, error: &KafkaError, mut output: Box<Output>) {
        let class = classify_error(error);
        if let ErrorClass::Fatal(kind) = class {
            // The holds stay: nothing derived from them is committed.
            self.stop.fail(Fatal::new(
                kind,
                format!("delivering to {}: {error}", output.topic),
            ));
            abandon_all(output.holds);
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
                self.ledger.release_all(output.holds);
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
